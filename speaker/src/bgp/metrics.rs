//! Names and help texts of BGP mode's Prometheus metrics (`ferrolb_speaker_bgp_*`), in one
//! place so the session tasks, the BFD thread and the tests agree.
//!
//! Constants only; no logic.

/// Gauge: 1 while the session with a peer is Established.
pub const SESSION_UP: &str = "ferrolb_speaker_bgp_session_up";
/// Help of [`SESSION_UP`].
pub const SESSION_UP_HELP: &str = "1 while the BGP session with the peer is Established";
/// Counter: times a session left Established.
pub const FLAPS: &str = "ferrolb_speaker_bgp_session_flaps_total";
/// Help of [`FLAPS`].
pub const FLAPS_HELP: &str = "Times the BGP session with the peer left Established";
/// Counter: UPDATE messages sent.
pub const UPDATES_SENT: &str = "ferrolb_speaker_bgp_updates_sent_total";
/// Help of [`UPDATES_SENT`].
pub const UPDATES_SENT_HELP: &str = "BGP UPDATE messages sent to the peer";
/// Gauge: UPDATE messages received on the current connection (routes are never installed).
pub const UPDATES_RECEIVED: &str = "ferrolb_speaker_bgp_updates_received";
/// Help of [`UPDATES_RECEIVED`].
pub const UPDATES_RECEIVED_HELP: &str =
    "BGP UPDATE messages received from the peer on the current session (ignored, never installed)";
/// Counter: NOTIFICATIONs sent, by code/subcode.
pub const NOTIFICATIONS_SENT: &str = "ferrolb_speaker_bgp_notifications_sent_total";
/// Help of [`NOTIFICATIONS_SENT`].
pub const NOTIFICATIONS_SENT_HELP: &str = "BGP NOTIFICATION messages sent, by code/subcode";
/// Counter: NOTIFICATIONs received, by code/subcode.
pub const NOTIFICATIONS_RECEIVED: &str = "ferrolb_speaker_bgp_notifications_received_total";
/// Help of [`NOTIFICATIONS_RECEIVED`].
pub const NOTIFICATIONS_RECEIVED_HELP: &str = "BGP NOTIFICATION messages received, by code/subcode";
/// Gauge: prefixes announced to the peer now.
pub const PREFIXES: &str = "ferrolb_speaker_bgp_prefixes_advertised";
/// Help of [`PREFIXES`].
pub const PREFIXES_HELP: &str = "Prefixes announced to the BGP peer now";
/// Counter: failed TCP connects, by reason.
pub const CONNECT_ERRORS: &str = "ferrolb_speaker_bgp_connect_errors_total";
/// Help of [`CONNECT_ERRORS`].
pub const CONNECT_ERRORS_HELP: &str = "BGP TCP connects that failed, by reason";
/// Gauge: 1 while the BFD session with the peer is Up.
pub const BFD_UP: &str = "ferrolb_speaker_bgp_bfd_up";
/// Help of [`BFD_UP`].
pub const BFD_UP_HELP: &str = "1 while the BFD session with the BGP peer is Up";
/// Counter: BFD sessions going down from Up, by diagnostic.
pub const BFD_DOWN: &str = "ferrolb_speaker_bgp_bfd_down_total";
/// Help of [`BFD_DOWN`].
pub const BFD_DOWN_HELP: &str = "BFD sessions that went down from Up, by diagnostic";
/// Counter: received BFD packets discarded, by reason.
pub const BFD_DISCARDS: &str = "ferrolb_speaker_bgp_bfd_discarded_total";
/// Help of [`BFD_DISCARDS`].
pub const BFD_DISCARDS_HELP: &str = "Received BFD packets discarded, by reason";
/// Gauge: peers selecting this node that get no session, by reason.
pub const SKIPPED: &str = "ferrolb_speaker_bgp_peers_skipped";
/// Help of [`SKIPPED`].
pub const SKIPPED_HELP: &str = "BGPPeers selecting this node that get no session, by reason";
/// Counter: BGPSessionState writes, by result.
pub const STATE_WRITES: &str = "ferrolb_speaker_bgp_state_writes_total";
/// Help of [`STATE_WRITES`].
pub const STATE_WRITES_HELP: &str = "BGPSessionState writes, by result (ok, error)";
