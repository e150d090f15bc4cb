//! The plugin handshake: what a plugin tells its host about itself, as the
//! reply of the built-in `/uds.plugin/handshake` method.
//!
//! The text is line-based UTF-8, so that it needs no codec feature:
//!
//! ```text
//! uds-plugin 1
//! pid 4242
//! service Greeter
//! method /Greeter/hello
//! service Admin
//! method /Admin/stats
//! ```
//!
//! The first line is the protocol version; `method` lines belong to the
//! `service` line above them. Unknown line kinds are ignored (room to grow).

/// The plugin protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The built-in method that answers the handshake.
pub(crate) const HANDSHAKE_METHOD: &str = "/uds.plugin/handshake";
/// The built-in method that asks the plugin to stop.
pub(crate) const SHUTDOWN_METHOD: &str = "/uds.plugin/shutdown";
/// The payload of the descriptor-passing message on the inherited socket.
pub(crate) const BOOTSTRAP: &[u8] = b"uds-plugin 1";

/// One service a plugin serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceInfo {
    pub(crate) name: String,
    pub(crate) methods: Vec<String>,
}

/// What a plugin says in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) version: String,
    pub(crate) pid: u32,
    pub(crate) services: Vec<ServiceInfo>,
}

impl Hello {
    /// The reply text.
    pub(crate) fn encode(pid: u32, services: &[ServiceInfo]) -> String {
        use std::fmt::Write;
        let mut out = format!("uds-plugin {PROTOCOL_VERSION}\npid {pid}\n");
        for s in services {
            let _ = writeln!(out, "service {}", s.name);
            for m in &s.methods {
                let _ = writeln!(out, "method {m}");
            }
        }
        out
    }

    /// Parses a reply; `Err` says what is wrong.
    pub(crate) fn parse(data: &[u8]) -> Result<Hello, String> {
        let text = std::str::from_utf8(data).map_err(|_| "not UTF-8".to_owned())?;
        let mut lines = text.lines();
        let version = lines
            .next()
            .and_then(|l| l.strip_prefix("uds-plugin "))
            .ok_or_else(|| {
                format!(
                    "expected `uds-plugin <version>`, got {:?}",
                    first_line(text)
                )
            })?;
        let version = short(version).to_owned();
        let mut hello = Hello {
            version,
            pid: 0,
            services: Vec::new(),
        };
        for line in lines {
            let (kind, value) = line.split_once(' ').unwrap_or((line, ""));
            match kind {
                "pid" => {
                    hello.pid = value
                        .parse()
                        .map_err(|_| format!("bad pid line {line:?}"))?;
                }
                "service" => hello.services.push(ServiceInfo {
                    name: value.to_owned(),
                    methods: Vec::new(),
                }),
                "method" => hello
                    .services
                    .last_mut()
                    .ok_or_else(|| format!("method before any service: {line:?}"))?
                    .methods
                    .push(value.to_owned()),
                _ => {}
            }
        }
        Ok(hello)
    }
}

/// The first line of `text`, cut to 64 characters for an error message.
fn first_line(text: &str) -> &str {
    short(text.lines().next().unwrap_or(""))
}

/// `s` cut to at most 64 characters (at a character boundary: the text is
/// the peer's).
pub(crate) fn short(s: &str) -> &str {
    s.char_indices().nth(64).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips() {
        let services = vec![
            ServiceInfo {
                name: "Greeter".into(),
                methods: vec!["/Greeter/hello".into(), "/Greeter/bye".into()],
            },
            ServiceInfo {
                name: "Admin".into(),
                methods: vec![],
            },
        ];
        let text = Hello::encode(42, &services);
        let hello = Hello::parse(text.as_bytes()).unwrap();
        assert_eq!(hello.version, PROTOCOL_VERSION.to_string());
        assert_eq!(hello.pid, 42);
        assert_eq!(hello.services, services);
    }

    #[test]
    fn malformed_hellos_say_what_is_wrong() {
        assert!(Hello::parse(b"hello\n").unwrap_err().contains("uds-plugin"));
        assert!(
            Hello::parse(b"uds-plugin 1\nmethod /x\n")
                .unwrap_err()
                .contains("before any service")
        );
        assert!(
            Hello::parse(b"uds-plugin 1\npid x\n")
                .unwrap_err()
                .contains("pid")
        );
        assert!(Hello::parse(&[0xff]).is_err());
        // Unknown lines are room to grow.
        assert!(Hello::parse(b"uds-plugin 1\nfeature x\n").is_ok());
        // The peer's text is cut at a character boundary, never mid-char.
        let odd = format!("{}é and more\n", "x".repeat(63));
        assert!(Hello::parse(odd.as_bytes()).unwrap_err().contains("xxx"));
        let long = format!("uds-plugin {}é\n", "9".repeat(200));
        assert_eq!(
            Hello::parse(long.as_bytes())
                .unwrap()
                .version
                .chars()
                .count(),
            64
        );
    }
}
