//! Log lines on stderr through `tracing`. Info lines read as they always
//! have (`imgforge: what happened`); `-v` adds debug lines with the build
//! stage they come from and the seconds since start, `-vv` trace lines
//! (every HTTP request), `-q` leaves errors only.
//! `RUST_LOG` (tracing's filter syntax) overrides both.

use std::fmt;
use std::time::Instant;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub struct LogArgs {
    /// Show debug log lines (-vv: trace lines too); RUST_LOG overrides.
    // Last in every command's help, whatever the command's own options are.
    #[arg(short, long, action = clap::ArgAction::Count, global = true, display_order = 900)]
    pub verbose: u8,
    /// Show errors only: no log lines, no progress bar or lines (JSON events stay); RUST_LOG overrides.
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        display_order = 901
    )]
    pub quiet: bool,
}

impl LogArgs {
    /// The filter these flags ask for, in `RUST_LOG` syntax.
    pub fn directives(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn,imgforge=info",
            (false, 1) => "warn,imgforge=debug",
            (false, _) => "warn,imgforge=trace",
        }
    }
}

/// Sends log lines to stderr, filtered by `RUST_LOG` when it is set and
/// by the flags otherwise.
pub fn init(args: &LogArgs) {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let (filter, bad_env) = match from_env.as_deref().map(EnvFilter::try_new) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(e)) => (EnvFilter::new(args.directives()), Some(e)),
        None => (EnvFilter::new(args.directives()), None),
    };
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(LineFormat {
            started: Instant::now(),
        })
        .try_init();
    if let (Ok(()), Some(e)) = (installed, bad_env) {
        tracing::warn!(
            "RUST_LOG is not a valid filter ({e}); using the command-line flags instead"
        );
    }
}

/// `imgforge: [level: ]message`; debug and trace lines also say when
/// (seconds since start) and where (the spans they are in, the library
/// they come from).
struct LineFormat {
    started: Instant,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(writer, "imgforge: ")?;
        let detailed = match *meta.level() {
            Level::ERROR => {
                write!(writer, "error: ")?;
                false
            }
            Level::WARN => {
                write!(writer, "warning: ")?;
                false
            }
            Level::INFO => false,
            Level::DEBUG => {
                write!(writer, "debug: ")?;
                true
            }
            Level::TRACE => {
                write!(writer, "trace: ")?;
                true
            }
        };
        if detailed {
            write!(writer, "[{:8.3}s] ", self.started.elapsed().as_secs_f64())?;
            if let Some(scope) = ctx.event_scope() {
                for span in scope.from_root() {
                    write!(writer, "{}", span.name())?;
                    let ext = span.extensions();
                    if let Some(fields) = ext.get::<FormattedFields<N>>() {
                        if !fields.is_empty() {
                            write!(writer, "{{{fields}}}")?;
                        }
                    }
                    write!(writer, ": ")?;
                }
            }
            if !meta.target().starts_with("imgforge") {
                write!(writer, "{}: ", meta.target())?;
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_choose_the_level_of_imgforge_lines() {
        let flags = |verbose, quiet| LogArgs { verbose, quiet };
        assert_eq!(flags(0, false).directives(), "warn,imgforge=info");
        assert_eq!(flags(1, false).directives(), "warn,imgforge=debug");
        assert_eq!(flags(2, false).directives(), "warn,imgforge=trace");
        assert_eq!(flags(0, true).directives(), "error");
        for args in [
            flags(0, false),
            flags(1, false),
            flags(2, false),
            flags(0, true),
        ] {
            assert!(EnvFilter::try_new(args.directives()).is_ok());
        }
    }
}
