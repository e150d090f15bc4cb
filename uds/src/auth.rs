//! Authorization: which peers a server lets in.
//!
//! A [`Policy`] is applied by the [`Listener`](crate::net::Listener) to every
//! accepted connection, using the peer's kernel credentials, before a single
//! byte is read from it. A denied peer is closed, logged with `tracing`, and
//! never handed to your code.
//!
//! The default is [`Policy::same_user`]: only processes running with the
//! server's effective uid get in. Widen it explicitly:
//!
//! ```
//! use uds::auth::Policy;
//! use uds::Cred;
//!
//! // The server's own user, anyone in group 2000, and uid 0.
//! let policy = Policy::same_user().or(Policy::gids([2000])).or(Policy::uids([0]));
//! assert!(policy.check(&Cred::new(7, 4242, 2000, None)).is_ok());
//! assert!(policy.check(&Cred::new(7, 4242, 4242, Some(vec![2000]))).is_ok());
//! assert!(policy.check(&Cred::new(7, 4242, 4242, None)).is_err());
//! ```

use std::fmt;
use std::sync::Arc;

use crate::cred::Cred;
use crate::sys;

/// A rule deciding whether a peer may use a server. Cheap to clone.
#[derive(Clone)]
pub struct Policy(Rule);

#[derive(Clone)]
enum Rule {
    Uids(Arc<[u32]>),
    Gids(Arc<[u32]>),
    Custom(Arc<dyn Fn(&Cred) -> bool + Send + Sync>),
    AllowAll,
    AnyOf(Arc<[Policy]>),
}

/// Why a peer was refused; produced by [`Policy::check`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer {peer} denied: {reason}")]
#[non_exhaustive]
pub struct Denied {
    /// The peer's credentials.
    pub peer: Cred,
    /// Which rule it failed, in words.
    pub reason: String,
}

impl Policy {
    /// Only processes whose effective uid equals this process's effective uid
    /// (read when the policy is built). The default.
    pub fn same_user() -> Self {
        Policy::uids([sys::effective_uid()])
    }

    /// Processes whose effective uid is in `uids`.
    pub fn uids(uids: impl IntoIterator<Item = u32>) -> Self {
        Policy(Rule::Uids(uids.into_iter().collect()))
    }

    /// Processes whose primary group or, where the kernel reports them, one of
    /// whose supplementary groups is in `gids` (see
    /// [`Cred::supplementary_groups`]).
    pub fn gids(gids: impl IntoIterator<Item = u32>) -> Self {
        Policy(Rule::Gids(gids.into_iter().collect()))
    }

    /// Your own rule over the peer's kernel credentials. It runs on the
    /// accept path: keep it fast and non-blocking.
    pub fn custom(rule: impl Fn(&Cred) -> bool + Send + Sync + 'static) -> Self {
        Policy(Rule::Custom(Arc::new(rule)))
    }

    /// Lets every peer in. The socket file's mode and owner are then the only
    /// gate (and abstract sockets have none): use with care.
    pub fn allow_all() -> Self {
        Policy(Rule::AllowAll)
    }

    /// A policy that allows a peer if `self` or `other` does.
    #[must_use]
    pub fn or(self, other: Policy) -> Self {
        let mut rules: Vec<Policy> = Vec::new();
        for p in [self, other] {
            match p.0 {
                Rule::AnyOf(list) => rules.extend(list.iter().cloned()),
                rule => rules.push(Policy(rule)),
            }
        }
        Policy(Rule::AnyOf(rules.into()))
    }

    /// Decides on `peer`.
    ///
    /// # Errors
    ///
    /// [`Denied`], with the peer and the policy it failed, if no rule of
    /// the policy allows it.
    pub fn check(&self, peer: &Cred) -> Result<(), Denied> {
        if self.allows(peer) {
            Ok(())
        } else {
            Err(Denied {
                peer: peer.clone(),
                reason: format!("not allowed by policy {self:?}"),
            })
        }
    }

    fn allows(&self, peer: &Cred) -> bool {
        match &self.0 {
            Rule::Uids(uids) => uids.contains(&peer.uid),
            Rule::Gids(gids) => gids.iter().any(|g| peer.in_group(*g)),
            Rule::Custom(f) => f(peer),
            Rule::AllowAll => true,
            Rule::AnyOf(list) => list.iter().any(|p| p.allows(peer)),
        }
    }
}

impl Default for Policy {
    /// [`Policy::same_user`].
    fn default() -> Self {
        Policy::same_user()
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Rule::Uids(u) => write!(f, "uids{:?}", &u[..]),
            Rule::Gids(g) => write!(f, "gids{:?}", &g[..]),
            Rule::Custom(_) => f.write_str("custom"),
            Rule::AllowAll => f.write_str("allow_all"),
            Rule::AnyOf(list) => {
                f.write_str("any_of(")?;
                for (i, p) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{p:?}")?;
                }
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: Option<Vec<u32>>) -> Cred {
        Cred::new(1, uid, gid, groups)
    }

    #[test]
    fn default_is_same_user() {
        let me = sys::effective_uid();
        let other = me.wrapping_add(1);
        assert!(Policy::default().check(&peer(me, 5, None)).is_ok());
        let denied = Policy::default().check(&peer(other, 5, None)).unwrap_err();
        assert_eq!(denied.peer.uid, other);
        assert!(denied.to_string().contains(&format!("uid={other}")));
    }

    #[test]
    fn gid_list_uses_supplementary_groups() {
        let p = Policy::gids([50]);
        assert!(p.check(&peer(9, 50, None)).is_ok());
        assert!(p.check(&peer(9, 1, Some(vec![3, 50]))).is_ok());
        assert!(p.check(&peer(9, 1, Some(vec![3]))).is_err());
    }

    #[test]
    fn custom_and_or() {
        let p = Policy::uids([1]).or(Policy::custom(|c| c.pid == 42));
        assert!(p.check(&Cred::new(42, 9, 9, None)).is_ok());
        assert!(p.check(&Cred::new(41, 1, 9, None)).is_ok());
        assert!(p.check(&Cred::new(41, 2, 9, None)).is_err());
        assert!(Policy::allow_all().check(&Cred::new(0, 9, 9, None)).is_ok());
    }
}
