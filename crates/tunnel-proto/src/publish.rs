//! Automatic and ranged publish ports: how a client asks for them in a
//! [`ProxySpec`](crate::ProxySpec), and the block rules both sides check alike.
//!
//! A fixed port still travels as `publish_port` alone, so older servers and clients see
//! nothing new unless the feature is used. `publish_ports` asks for more:
//!
//! - `"auto"`: the server picks a free port within its `allow_ports` and answers with it in
//!   [`ItemResult::port`](crate::ItemResult::port);
//! - `{"block": {"first": 6000, "last": 6010}}`: every port of the block, all or none, each
//!   its own registry key on the server; the answer's `port` is `first`.
//!
//! A user connection on a block port reaches the client with that port as the stream's
//! destination ([`StreamOpen::Proxy`](crate::StreamOpen::Proxy) `dest`), which
//! [`PortRequest::offset`] turns into the offset of the local port to dial.

use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::ProtoError;

/// Most ports one proxy may publish as a block.
pub const MAX_PORT_BLOCK: u16 = 1000;

/// A publish port the server chooses, or a block of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum PortRequest {
    /// One port the server picks within its `allow_ports` (and the client's scope).
    Auto,
    /// Every port from `first` to `last` inclusive, published together or not at all.
    Block {
        /// Lowest port of the block.
        first: u16,
        /// Highest port of the block (equal to `first` for a block of one).
        last: u16,
    },
}

impl PortRequest {
    /// A block from `first` to `last`, checked by [`PortRequest::check`].
    ///
    /// # Errors
    ///
    /// What is wrong with the block, for the user (see [`PortRequest::check`]).
    pub fn block(first: u16, last: u16) -> Result<Self, ProtoError> {
        let block = PortRequest::Block { first, last };
        block.check()?;
        Ok(block)
    }

    /// Whether the request is well formed: a block starts above 0, runs upward and holds at
    /// most [`MAX_PORT_BLOCK`] ports. The server checks every peer's request with it before
    /// it does anything proportional to the block.
    ///
    /// # Errors
    ///
    /// [`ProtoError::BlockFromZero`], [`ProtoError::EmptyBlock`] or
    /// [`ProtoError::BlockTooLong`]: its text names the rule.
    pub fn check(&self) -> Result<(), ProtoError> {
        let PortRequest::Block { first, last } = *self else {
            return Ok(());
        };
        if first == 0 {
            return Err(ProtoError::BlockFromZero);
        }
        if first > last {
            return Err(ProtoError::EmptyBlock { first, last });
        }
        let len = u32::from(last) - u32::from(first) + 1;
        if len > u32::from(MAX_PORT_BLOCK) {
            return Err(ProtoError::BlockTooLong { first, last, len });
        }
        Ok(())
    }

    /// The ports of a block; `None` for `Auto`.
    pub fn ports(&self) -> Option<RangeInclusive<u16>> {
        match *self {
            PortRequest::Auto => None,
            PortRequest::Block { first, last } => Some(first..=last),
        }
    }

    /// Where `public` sits in the block (0 for its first port); `None` for `Auto` or a
    /// port outside the block.
    pub fn offset(&self, public: u16) -> Option<u16> {
        self.ports()
            .filter(|r| r.contains(&public))
            .map(|r| public - r.start())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn json_shape_of_auto_and_block() {
        assert_eq!(
            serde_json::to_value(PortRequest::Auto).unwrap(),
            json!("auto")
        );
        assert_eq!(
            serde_json::to_value(PortRequest::block(6000, 6010).unwrap()).unwrap(),
            json!({"block": {"first": 6000, "last": 6010}})
        );
        let back: PortRequest =
            serde_json::from_value(json!({"block": {"first": 1, "last": 1}})).unwrap();
        assert_eq!(back, PortRequest::Block { first: 1, last: 1 });
        assert!(serde_json::from_value::<PortRequest>(json!("any")).is_err());
        assert!(serde_json::from_value::<PortRequest>(
            json!({"block": {"first": 1, "last": 2, "step": 1}})
        )
        .is_err());
    }

    #[test]
    fn blocks_are_bounded_and_ordered() {
        assert!(PortRequest::block(6000, 6999).is_ok());
        let e = PortRequest::block(6000, 7000).unwrap_err().to_string();
        assert!(
            e.contains("1001 ports") && e.contains("at most 1000"),
            "{e}"
        );
        assert!(PortRequest::block(10, 9)
            .unwrap_err()
            .to_string()
            .contains("lower port first"));
        assert_eq!(
            PortRequest::block(0, 9).unwrap_err().to_string(),
            "a port block starts at port 1 or above"
        );
        assert_eq!(
            PortRequest::block(1, 1001).unwrap_err().to_string(),
            "1-1001 is 1001 ports; a block holds at most 1000: split it into several proxies"
        );
        assert!(PortRequest::block(65535, 65535).is_ok());
        // A peer can send what `block` would refuse: `check` is what the server runs.
        let huge = PortRequest::Block {
            first: 1,
            last: 65535,
        };
        assert!(huge.check().is_err());
        assert!(PortRequest::Auto.check().is_ok());
    }

    #[test]
    fn offsets_within_the_block_only() {
        let b = PortRequest::block(6000, 6004).unwrap();
        assert_eq!(b.offset(6000), Some(0));
        assert_eq!(b.offset(6004), Some(4));
        assert_eq!(b.offset(6005), None);
        assert_eq!(b.offset(5999), None);
        assert_eq!(PortRequest::Auto.offset(6000), None);
        assert_eq!(b.ports().unwrap().count(), 5);
    }
}
