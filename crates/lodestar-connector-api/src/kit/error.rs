//! An error and its `source()` chain as text: what a connector's message (one line, after the
//! source's name) and the CLI's `caused by:` lines are made of.

use std::error::Error;

/// An error and its causes on one line, `what: why: deeper why`, leaving out a cause whose
/// text the line already shows (many errors repeat their source's message in their own).
///
/// ```
/// use lodestar_connector_api::kit::error::chain;
///
/// let io = std::io::Error::other("connection refused");
/// let outer = std::io::Error::other(io);
/// assert_eq!(chain(&outer), "connection refused");
/// ```
pub fn chain(e: &(dyn Error + 'static)) -> String {
    causes(e, |e| e.to_string()).join(": ")
}

/// The texts of an error and its causes, outermost first, each as `describe` writes it; a
/// cause is left out when the texts before it already show it.
pub fn causes(
    e: &(dyn Error + 'static),
    describe: impl Fn(&(dyn Error + 'static)) -> String,
) -> Vec<String> {
    let first = describe(e);
    let mut shown = first.clone();
    let mut parts = vec![first];
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = describe(c);
        if !shown.contains(&text) {
            shown.push_str(": ");
            shown.push_str(&text);
            parts.push(text);
        }
        cause = c.source();
    }
    parts
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::*;

    /// An error with a message and an optional cause.
    #[derive(Debug)]
    struct Failed(&'static str, Option<Box<Failed>>);

    impl fmt::Display for Failed {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Failed {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    fn failed(parts: &[&'static str]) -> Failed {
        let (last, outer) = parts.split_last().unwrap();
        outer.iter().rev().fold(Failed(last, None), |cause, m| {
            Failed(m, Some(Box::new(cause)))
        })
    }

    #[test]
    fn causes_follow_on_one_line() {
        let e = failed(&[
            "cannot list s3://acme/",
            "request failed",
            "connection refused",
        ]);
        assert_eq!(
            chain(&e),
            "cannot list s3://acme/: request failed: connection refused"
        );
        assert_eq!(chain(&failed(&["alone"])), "alone");
    }

    #[test]
    fn a_cause_already_shown_is_left_out() {
        let e = failed(&[
            "error performing TLS handshake: server does not support TLS",
            "server does not support TLS",
            "eof",
        ]);
        assert_eq!(
            chain(&e),
            "error performing TLS handshake: server does not support TLS: eof"
        );
        assert_eq!(
            causes(&e, |e| e.to_string().to_uppercase()),
            [
                "ERROR PERFORMING TLS HANDSHAKE: SERVER DOES NOT SUPPORT TLS",
                "EOF"
            ]
        );
    }
}
