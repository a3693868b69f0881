//! Names and help texts of the speaker's Prometheus metrics, in one place so the receive
//! threads, the engine and the tests agree. Values live in `ferrolb_runtime::Metrics`.
//!
//! Constants only; no logic.

/// Gauge: IPs this speaker announces.
pub const IPS_ANNOUNCED: &str = "ferrolb_speaker_ips_announced";
/// Help of [`IPS_ANNOUNCED`].
pub const IPS_ANNOUNCED_HELP: &str = "LoadBalancer IPs this speaker announces now";
/// Counter: ARP/NDP requests answered, by family.
pub const REQUESTS_ANSWERED: &str = "ferrolb_speaker_requests_answered_total";
/// Help of [`REQUESTS_ANSWERED`].
pub const REQUESTS_ANSWERED_HELP: &str = "ARP requests and Neighbor Solicitations answered";
/// Counter: gratuitous ARP / unsolicited NA frames sent, by family.
pub const GRATUITOUS_SENT: &str = "ferrolb_speaker_gratuitous_frames_sent_total";
/// Help of [`GRATUITOUS_SENT`].
pub const GRATUITOUS_SENT_HELP: &str = "Gratuitous ARP and unsolicited NA frames sent on takeover";
/// Counter: malformed frames dropped, by reason.
pub const FRAMES_DROPPED: &str = "ferrolb_speaker_frames_dropped_total";
/// Help of [`FRAMES_DROPPED`].
pub const FRAMES_DROPPED_HELP: &str = "Malformed ARP/NDP frames dropped, by reason";
/// Counter: well-formed frames needing no answer, by reason.
pub const FRAMES_IGNORED: &str = "ferrolb_speaker_frames_ignored_total";
/// Help of [`FRAMES_IGNORED`].
pub const FRAMES_IGNORED_HELP: &str = "Well-formed ARP/NDP frames needing no answer, by reason";
/// Counter: frames that could not be sent, by kind.
pub const SEND_ERRORS: &str = "ferrolb_speaker_send_errors_total";
/// Help of [`SEND_ERRORS`].
pub const SEND_ERRORS_HELP: &str = "Frames that could not be sent, by kind";
/// Counter: ownership changes of this speaker, by direction.
pub const OWNERSHIP_CHANGES: &str = "ferrolb_speaker_ownership_changes_total";
/// Help of [`OWNERSHIP_CHANGES`].
pub const OWNERSHIP_CHANGES_HELP: &str =
    "IPs this speaker started (acquired) or stopped (released) announcing";
/// Counter: peers going down, by reason.
pub const PEER_DOWN: &str = "ferrolb_speaker_peer_down_total";
/// Help of [`PEER_DOWN`].
pub const PEER_DOWN_HELP: &str = "Membership down events, by reason";
/// Sum of detection times (last heartbeat heard to declared dead) of timed-out peers.
pub const DETECTION_SUM: &str = "ferrolb_speaker_detection_seconds_sum";
/// Help of [`DETECTION_SUM`].
pub const DETECTION_SUM_HELP: &str =
    "Sum of failure detection times (last heartbeat heard to peer declared dead)";
/// Count of [`DETECTION_SUM`] observations.
pub const DETECTION_COUNT: &str = "ferrolb_speaker_detection_seconds_count";
/// Help of [`DETECTION_COUNT`].
pub const DETECTION_COUNT_HELP: &str = "Failure detections measured";
/// Gauge: the last detection time.
pub const DETECTION_LAST: &str = "ferrolb_speaker_detection_seconds_last";
/// Help of [`DETECTION_LAST`].
pub const DETECTION_LAST_HELP: &str = "The most recent failure detection time";
/// Gauge: alive peers (this speaker excluded).
pub const PEERS_ALIVE: &str = "ferrolb_speaker_peers_alive";
/// Help of [`PEERS_ALIVE`].
pub const PEERS_ALIVE_HELP: &str = "Speakers this one considers alive, itself excluded";
/// Counter: heartbeats that did not decode, by reason.
pub const MEMBERSHIP_BAD: &str = "ferrolb_speaker_membership_decode_errors_total";
/// Help of [`MEMBERSHIP_BAD`].
pub const MEMBERSHIP_BAD_HELP: &str = "Membership datagrams that did not decode, by reason";
/// Counter: API requests made, by kind (status, event, list).
pub const API_REQUESTS: &str = "ferrolb_speaker_api_requests_total";
/// Help of [`API_REQUESTS`].
pub const API_REQUESTS_HELP: &str =
    "Kubernetes API requests made, by kind (status and event writes, watch (re)lists)";
/// Counter: failed API writes, by kind.
pub const API_ERRORS: &str = "ferrolb_speaker_api_errors_total";
/// Help of [`API_ERRORS`].
pub const API_ERRORS_HELP: &str = "Kubernetes API writes that failed, by kind";
/// Counter: address conflicts seen.
pub const CONFLICTS: &str = "ferrolb_speaker_address_conflicts_total";
/// Help of [`CONFLICTS`].
pub const CONFLICTS_HELP: &str = "ARP/NDP frames from another host claiming an address we announce";
/// Gauge: 1 once the speaker may announce (membership settled).
pub const SETTLED: &str = "ferrolb_speaker_settled";
/// Help of [`SETTLED`].
pub const SETTLED_HELP: &str = "1 once membership has settled and the speaker may announce";
/// Gauge: IPs this node is eligible for but cannot place (no usable interface).
pub const IPS_WITHOUT_INTERFACE: &str = "ferrolb_speaker_ips_without_interface";
/// Help of [`IPS_WITHOUT_INTERFACE`].
pub const IPS_WITHOUT_INTERFACE_HELP: &str = "LoadBalancer IPs this node is eligible for but cannot announce: no wanted interface is present, up and allowed by --interfaces";
/// Counter: membership datagrams, by direction (sent, received) and kind (ping, ack, ping_req,
/// nack, notice, sync_req, sync_digest, sync_pull, heartbeat, leave, other).
pub const MEMBERSHIP_PACKETS: &str = "ferrolb_speaker_membership_packets_total";
/// Help of [`MEMBERSHIP_PACKETS`].
pub const MEMBERSHIP_PACKETS_HELP: &str = "Membership UDP datagrams, by direction and kind";
/// Counter: membership UDP payload bytes, by direction and kind.
pub const MEMBERSHIP_BYTES: &str = "ferrolb_speaker_membership_bytes_total";
/// Help of [`MEMBERSHIP_BYTES`].
pub const MEMBERSHIP_BYTES_HELP: &str = "Membership UDP payload bytes, by direction and kind";
/// Gauge: the local health score (Lifeguard): 0 is healthy; timeouts scale by 1 + score.
pub const MEMBERSHIP_HEALTH: &str = "ferrolb_speaker_membership_local_health";
/// Help of [`MEMBERSHIP_HEALTH`].
pub const MEMBERSHIP_HEALTH_HELP: &str =
    "Local health score (0 healthy; probe interval and timeouts scale by 1 + score)";
/// Gauge: peers currently suspected (still alive for the election).
pub const MEMBERSHIP_SUSPECTS: &str = "ferrolb_speaker_membership_suspects";
/// Help of [`MEMBERSHIP_SUSPECTS`].
pub const MEMBERSHIP_SUSPECTS_HELP: &str = "Peers currently suspected by membership";
/// Counter: peers this speaker itself declared dead (its suspicion expired unrefuted).
pub const MEMBERSHIP_DECLARED_DEAD: &str = "ferrolb_speaker_membership_declared_dead_total";
/// Help of [`MEMBERSHIP_DECLARED_DEAD`].
pub const MEMBERSHIP_DECLARED_DEAD_HELP: &str =
    "Peers this speaker declared dead after an unrefuted, confirmed suspicion";
/// Counter: what the SWIM machinery did, by event (probes, indirect_probes, accusations,
/// refutations, late_ticks, syncs, pulls, legacy_heartbeats).
pub const MEMBERSHIP_SWIM: &str = "ferrolb_speaker_membership_swim_events_total";
/// Help of [`MEMBERSHIP_SWIM`].
pub const MEMBERSHIP_SWIM_HELP: &str = "SWIM membership activity, by event";
/// Counter: stalls of the membership thread longer than peers need to declare this speaker
/// dead (each gives up this speaker's IPs).
pub const MEMBERSHIP_STALLS: &str = "ferrolb_speaker_membership_stalls_total";
/// Help of [`MEMBERSHIP_STALLS`].
pub const MEMBERSHIP_STALLS_HELP: &str =
    "Stalls of the membership thread long enough for peers to declare this speaker dead";
