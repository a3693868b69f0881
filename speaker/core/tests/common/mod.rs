//! Helpers shared by the membership tests: building a version 3 packet and reading back what a
//! member sent.

use std::net::SocketAddr;

use ferrolb_speaker_core::membership::Action;
use ferrolb_speaker_core::membership::codec::{self, Body, Datagram, Item, Packet};

/// A packet from `from` with the given header and body.
pub fn packet(
    from: &str,
    generation: u64,
    incarnation: u32,
    body: Body,
    items: Vec<Item>,
) -> Vec<u8> {
    Packet {
        from: from.into(),
        generation,
        incarnation,
        state_version: 0,
        body,
        items,
    }
    .encode()
}

/// The packets among `actions`, decoded, with where each goes.
pub fn sends(actions: &[Action]) -> Vec<(SocketAddr, Packet)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, bytes } => match codec::decode(bytes) {
                Ok(Datagram::Packet(p)) => Some((*to, p)),
                other => panic!("not a version 3 packet: {other:?}"),
            },
            Action::Event(_) => None,
        })
        .collect()
}
