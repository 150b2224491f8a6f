//! deb822 control data, the format of apt's `Packages` and `Release` files:
//! paragraphs separated by blank lines, `Field: value` lines, continuation
//! lines starting with a space or tab. Field names compare without regard
//! to case, as apt and dpkg do.

/// One paragraph: its fields in file order, with the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paragraph {
    /// 1-based line of the paragraph's first field.
    pub line: usize,
    fields: Vec<(String, String)>,
}

impl Paragraph {
    /// The value of `name` (any case). A multi-line value keeps its
    /// continuation lines, each after a `\n`, with the leading blank removed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct Deb822Error {
    pub line: usize,
    pub problem: String,
}

/// Parses every paragraph of `text`. Comment lines (`#`) are skipped, as
/// apt does; a field repeated within a paragraph, a line without a colon
/// and a continuation line without a field are errors.
pub fn parse(text: &str) -> Result<Vec<Paragraph>, Deb822Error> {
    let mut paragraphs = Vec::new();
    let mut current: Option<Paragraph> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            paragraphs.extend(current.take());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let err = |problem: &str| Deb822Error {
            line: line_no,
            problem: problem.to_owned(),
        };
        if line.starts_with(' ') || line.starts_with('\t') {
            let para = current.as_mut().ok_or_else(|| {
                err("a continuation line (starting with a blank) outside a field")
            })?;
            let (_, value) = para
                .fields
                .last_mut()
                .ok_or_else(|| err("a continuation line before any field"))?;
            let rest = &line[1..];
            // " ." stands for an empty line inside a value.
            value.push('\n');
            value.push_str(if rest.trim_end() == "." {
                ""
            } else {
                rest.trim_end()
            });
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| err("expected `Field: value`"))?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) || name.starts_with('-') {
            return Err(err(&format!("{name:?} is not a field name")));
        }
        let para = current.get_or_insert_with(|| Paragraph {
            line: line_no,
            fields: Vec::new(),
        });
        if para.get(name).is_some() {
            return Err(err(&format!("field {name} appears twice in one paragraph")));
        }
        para.fields.push((name.to_owned(), value.trim().to_owned()));
    }
    paragraphs.extend(current);
    Ok(paragraphs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two stanzas as they appear in noble's main/binary-amd64/Packages.
    const PACKAGES: &str = "Package: openssh-server\n\
Architecture: amd64\n\
Version: 1:9.6p1-3ubuntu13\n\
Multi-Arch: foreign\n\
Priority: optional\n\
Section: net\n\
Source: openssh\n\
Depends: libpam-modules (>= 0.72-9), adduser, libssl3t64 (>= 3.0.13)\n\
Filename: pool/main/o/openssh/openssh-server_9.6p1-3ubuntu13_amd64.deb\n\
Size: 509870\n\
SHA256: 1f5c3d6a0c2b7d28e9f0bdb9c0cd0b5d4d2f8c1e0a3b4c5d6e7f8091a2b3c4d5\n\
Description: secure shell (SSH) server, for secure access from remote machines\n\
Task: server-minimal\n\
\n\
Package: ifupdown\n\
architecture: amd64\n\
Version: 0.8.41ubuntu1\n\
Filename: pool/universe/i/ifupdown/ifupdown_0.8.41ubuntu1_amd64.deb\n\
Description: high level tools to configure network interfaces\n \
This package provides the tools ifup and ifdown.\n \
.\n \
Second paragraph.\n";

    #[test]
    fn packages_stanzas_parse_with_any_field_case() {
        let ps = parse(PACKAGES).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("package"), Some("openssh-server"));
        assert_eq!(ps[0].get("VERSION"), Some("1:9.6p1-3ubuntu13"));
        assert_eq!(ps[0].line, 1);
        assert_eq!(ps[1].line, 15);
        assert_eq!(ps[1].get("Architecture"), Some("amd64"));
        assert_eq!(
            ps[1].get("Description"),
            Some("high level tools to configure network interfaces\nThis package provides the tools ifup and ifdown.\n\nSecond paragraph.")
        );
        assert_eq!(ps[1].get("Size"), None);
    }

    #[test]
    fn release_file_lists_are_continuation_lines() {
        let text = "Origin: Ubuntu\r\nSHA256:\r\n 0a 12 main/binary-amd64/Packages\r\n 0b 34 main/binary-amd64/Packages.xz\r\n";
        let ps = parse(text).unwrap();
        assert_eq!(
            ps[0].get("sha256"),
            Some("\n0a 12 main/binary-amd64/Packages\n0b 34 main/binary-amd64/Packages.xz")
        );
    }

    #[test]
    fn broken_lines_are_located() {
        assert_eq!(parse("Package: a\nno colon here\n").unwrap_err().line, 2);
        assert_eq!(parse(" continuation\n").unwrap_err().line, 1);
        let twice = parse("Package: a\n\nPackage: b\npackage: c\n").unwrap_err();
        assert_eq!(twice.line, 4);
        assert!(twice.problem.contains("twice"), "{twice}");
        assert_eq!(parse("\n\n# comment\n\n").unwrap(), Vec::new());
    }
}
