//! Where each key of a profile is written, so that problems found on the
//! parsed profile can be reported as `file:line:col`.

use std::collections::HashMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// Byte ranges of every value, by path (`network.bridges[0].internal[1].gateway`).
#[derive(Debug, Default)]
pub struct Spans {
    values: HashMap<String, Range<usize>>,
}

impl Spans {
    pub fn index(text: &str) -> Spans {
        let mut spans = Spans::default();
        if let Ok(table) = DeTable::parse(text) {
            spans.walk_table("", table.get_ref());
        }
        spans
    }

    fn walk_table(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            self.walk_value(&path, value.get_ref(), value.span());
        }
    }

    fn walk_value(&mut self, path: &str, value: &DeValue<'_>, span: Range<usize>) {
        self.values.insert(path.to_owned(), span);
        match value {
            DeValue::Table(t) => self.walk_table(path, t),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.walk_value(&format!("{path}[{i}]"), item.get_ref(), item.span());
                }
            }
            _ => {}
        }
    }

    /// The path of the value written exactly at `span` (the innermost, when
    /// a table and its only value share it), for errors the TOML parser
    /// reports with a span but no key.
    pub fn path_at(&self, span: &Range<usize>) -> Option<&str> {
        self.values
            .iter()
            .filter(|(_, s)| *s == span)
            .map(|(p, _)| p.as_str())
            .max_by_key(|p| (p.len(), *p))
    }

    /// The span of `path`, or of its nearest written parent (a problem with
    /// a default value points at the table that left it out).
    pub fn find(&self, path: &str) -> Option<Range<usize>> {
        let mut p = path;
        loop {
            if let Some(span) = self.values.get(p) {
                return Some(span.clone());
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_tables_and_arrays_are_indexed() {
        let text = "[system]\nhostname = \"a\"\n\n[[network.bridges]]\nname = \"vmbr0\"\nports = [{ name = \"eth0\", tag = 31 }]\n";
        let spans = Spans::index(text);
        let at = |p: &str| &text[spans.find(p).unwrap()];
        assert_eq!(at("system.hostname"), "\"a\"");
        assert_eq!(at("network.bridges[0].name"), "\"vmbr0\"");
        assert_eq!(at("network.bridges[0].ports[0].tag"), "31");
        // Not written: falls back to the port's table.
        assert!(at("network.bridges[0].ports[0].trunks").starts_with("{ name"));
        let tag = spans.find("network.bridges[0].ports[0].tag").unwrap();
        assert_eq!(spans.path_at(&tag), Some("network.bridges[0].ports[0].tag"));
        assert_eq!(spans.path_at(&(0..1)), None);
    }
}
