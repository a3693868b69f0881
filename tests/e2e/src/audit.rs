//! kube-apiserver's audit log, read into typed events: the lab logs every request made with
//! ServiceAccount credentials, once its response is complete (`ferrolb_lab::cp::AUDIT_POLICY`),
//! one JSON event per line, and the tests and benchmarks read it to see exactly which requests
//! ferrolb's components made, when, and whether any was refused.
//!
//! The API server rotates the log (`--audit-log-maxsize`, `--audit-log-maxbackup`): the current
//! file keeps its name (`Lab::audit_log()`, `audit.jsonl`), and a rotated copy is renamed
//! `audit-<UTC time of the rotation>.jsonl` (`audit-2026-12-07T15-04-05.000.jsonl`), so copies
//! sort oldest first by name. [`read`] reads them all, oldest first, then the current file.
//!
//! Pure readers; nothing here starts, stops or configures anything in a lab.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;

/// One request as the API server audited it (an `audit.k8s.io/v1` Event), with the fields the
/// tests read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Who made the request (`user.username`), e.g. `system:serviceaccount:<ns>:<name>`.
    pub user: String,
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, `patch`, …), or the lower-case
    /// HTTP method for a request outside the resource API.
    pub verb: String,
    /// The resource's API group; empty for the core group.
    pub api_group: String,
    /// The resource (`services`, `leases`, …); empty for a request that names none (discovery,
    /// `/healthz`).
    pub resource: String,
    /// The subresource (`status`), if the request named one.
    pub subresource: Option<String>,
    /// The object's namespace, if the request named one.
    pub namespace: Option<String>,
    /// The object's name, if the request named one.
    pub name: Option<String>,
    /// The request's path and query.
    pub request_uri: String,
    /// The addresses the request came from, the client's first.
    pub source_ips: Vec<String>,
    /// The HTTP status of the response; 0 if the event has none.
    pub code: u16,
    /// The response status's message (why a request was refused); empty if none.
    pub message: String,
    /// The stage the event was logged at; the lab logs `ResponseComplete` only.
    pub stage: String,
    /// When the API server received the request, in microseconds since the Unix epoch.
    pub received_us: i64,
    /// When the API server logged the event, in microseconds since the Unix epoch: for the
    /// lab's `ResponseComplete` events, when the response ended (a watch's when it closed).
    pub stage_us: i64,
}

impl Event {
    /// Parses one line of the JSON audit log; `None` if it is not an audit event (not JSON, or
    /// without a user name, a verb, a stage or a time stamp the API server always writes).
    pub fn parse(line: &str) -> Option<Event> {
        let ev: serde_json::Value = serde_json::from_str(line).ok()?;
        let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
        let time_us = |v: &serde_json::Value| {
            v.as_str()?
                .parse::<Timestamp>()
                .ok()
                .map(|t| t.as_microsecond())
        };
        let o = &ev["objectRef"];
        Some(Event {
            user: text(&ev["user"]["username"])?,
            verb: text(&ev["verb"])?,
            api_group: text(&o["apiGroup"]).unwrap_or_default(),
            resource: text(&o["resource"]).unwrap_or_default(),
            subresource: text(&o["subresource"]),
            namespace: text(&o["namespace"]),
            name: text(&o["name"]),
            request_uri: text(&ev["requestURI"]).unwrap_or_default(),
            source_ips: ev["sourceIPs"]
                .as_array()
                .map(|ips| ips.iter().filter_map(text).collect())
                .unwrap_or_default(),
            code: ev["responseStatus"]["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(0),
            message: text(&ev["responseStatus"]["message"]).unwrap_or_default(),
            stage: text(&ev["stage"])?,
            received_us: time_us(&ev["requestReceivedTimestamp"])?,
            stage_us: time_us(&ev["stageTimestamp"])?,
        })
    }

    /// `resource`, or `resource/subresource` when the request named a subresource; `?` for a
    /// request that named no resource.
    pub fn resource_path(&self) -> String {
        let resource = if self.resource.is_empty() {
            "?"
        } else {
            &self.resource
        };
        match &self.subresource {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_string(),
        }
    }

    /// Whether the request asked to change something ([`is_write_verb`]).
    pub fn is_write(&self) -> bool {
        is_write_verb(&self.verb)
    }
}

/// Whether `verb` changes something: create, update, patch, delete, deletecollection.
pub fn is_write_verb(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// The events read from an audit log and its rotated copies, oldest file first, in the order
/// each file has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditLog {
    pub events: Vec<Event>,
    /// Lines that were not audit events and were skipped (a line the API server was still
    /// writing when it was read, for one), so a caller can tell a short log from a broken one.
    pub malformed: usize,
}

/// The files of the audit log `log`: its rotated copies oldest first, then `log` itself.
pub fn files(log: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = log.parent().unwrap_or(Path::new("."));
    let name = log
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other(format!("{} names no file", log.display())))?;
    // lumberjack's naming, as kube-apiserver uses it: `<stem>-<time><ext>`.
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    let prefix = format!("{stem}-");
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(ext) && n != name)
        })
        .collect();
    // The rotation time in the name is fixed-width UTC, so the name order is the time order.
    rotated.sort();
    rotated.push(log.to_path_buf());
    Ok(rotated)
}

/// Every event of the audit log `log` and its rotated copies, oldest first. Fails if a file
/// cannot be read (the current log not existing included); lines that are not audit events are
/// skipped and counted.
pub fn read(log: &Path) -> io::Result<AuditLog> {
    read_lines(log, None)
}

/// The events of `user` only, from the audit log `log` and its rotated copies, oldest first.
/// Lines that do not mention `user` are skipped before they are parsed, which is what makes
/// reading a 50 MB log several times in a benchmark cheap; `malformed` counts only lines that
/// mention `user`.
pub fn read_user(log: &Path, user: &str) -> io::Result<AuditLog> {
    read_lines(log, Some(user))
}

fn read_lines(log: &Path, user: Option<&str>) -> io::Result<AuditLog> {
    let mut out = AuditLog::default();
    for file in files(log)? {
        let text = std::fs::read_to_string(&file)?;
        parse_into(&text, user, &mut out);
    }
    Ok(out)
}

fn parse_into(text: &str, user: Option<&str>, out: &mut AuditLog) {
    for line in text.lines() {
        if line.trim().is_empty() || user.is_some_and(|u| !line.contains(u)) {
            continue;
        }
        match Event::parse(line) {
            Some(ev) if user.is_none_or(|u| ev.user == u) => out.events.push(ev),
            Some(_) => {}
            None => out.malformed += 1,
        }
    }
}

/// Whether the time `us` (microseconds since the Unix epoch, as in [`Event`]) lies in
/// `[from, to]`, both ends included, compared to the nanosecond (no rounding of the bounds).
pub fn within(us: i64, from: Timestamp, to: Timestamp) -> bool {
    let ns = i128::from(us) * 1000;
    from.as_nanosecond() <= ns && ns <= to.as_nanosecond()
}

/// The requests `user` made that the API server received in `[from_us, to_us)` (Unix
/// microseconds), counted by `verb group/resource[/subresource]` (`core` for the core group,
/// `?` for a request naming no resource). The lab logs an event once the response is
/// complete, so a watch is counted once it ends, under the time it was received.
pub fn requests_by_kind(
    events: &[Event],
    user: &str,
    from_us: i64,
    to_us: i64,
) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        if e.user != user || e.received_us < from_us || e.received_us >= to_us {
            continue;
        }
        let group = if e.api_group.is_empty() {
            "core"
        } else {
            &e.api_group
        };
        let kind = format!("{} {group}/{}", e.verb, e.resource_path());
        *out.entry(kind).or_insert(0) += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An audit event line as kube-apiserver writes it (only the fields read here).
    fn line(
        user: &str,
        at: &str,
        verb: &str,
        group: Option<&str>,
        res: &str,
        sub: Option<&str>,
    ) -> String {
        let mut o = serde_json::json!({"resource": res});
        if let Some(g) = group {
            o["apiGroup"] = g.into();
        }
        if let Some(s) = sub {
            o["subresource"] = s.into();
        }
        serde_json::json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1",
            "stage": "ResponseComplete", "user": {"username": user},
            "requestReceivedTimestamp": at, "stageTimestamp": at, "verb": verb, "objectRef": o})
        .to_string()
    }

    #[test]
    fn requests_by_user_window_and_kind() {
        let me = "system:serviceaccount:default:bench";
        let log = [
            line(
                me,
                "1970-01-01T00:00:01.000000Z",
                "watch",
                None,
                "services",
                None,
            ),
            line(
                me,
                "1970-01-01T00:00:02.000000Z",
                "watch",
                None,
                "services",
                None,
            ),
            line(
                me,
                "1970-01-01T00:00:02.500000Z",
                "patch",
                None,
                "services",
                Some("status"),
            ),
            line(
                me,
                "1970-01-01T00:00:02.600000Z",
                "list",
                Some("ferrolb.io"),
                "ipaddresspools",
                None,
            ),
            line(
                "someone-else",
                "1970-01-01T00:00:02.000000Z",
                "get",
                None,
                "nodes",
                None,
            ),
            line(
                me,
                "1970-01-01T00:00:03.000000Z",
                "watch",
                None,
                "services",
                None,
            ),
            "not json".to_string(),
        ]
        .join("\n");
        let mut parsed = AuditLog::default();
        parse_into(&log, None, &mut parsed);
        let events = parsed.events;
        let got = requests_by_kind(&events, me, 1_500_000, 3_000_000);
        let want: BTreeMap<String, usize> = [
            ("watch core/services".to_string(), 1),
            ("patch core/services/status".to_string(), 1),
            ("list ferrolb.io/ipaddresspools".to_string(), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
        assert_eq!(
            requests_by_kind(&events, me, 0, i64::MAX)
                .values()
                .sum::<usize>(),
            5
        );
    }

    /// A scratch directory removed when dropped.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_rotated_copies_oldest_first_and_skips_malformed_lines() {
        let dir = Scratch(std::env::temp_dir().join(format!(
            "ferrolb-audit-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )));
        std::fs::create_dir_all(&dir.0).expect("scratch directory");
        let log = dir.0.join("audit.jsonl");
        let me = "system:serviceaccount:ferrolb-system:ferrolb-speaker";
        let at = |s: u32| format!("2026-12-07T15:04:{s:02}.123456Z");
        // A full event, with every field read, in the current file.
        let full = serde_json::json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": "0f5a", "stage": "ResponseComplete",
            "requestURI": "/api/v1/namespaces/default/services/web/status",
            "verb": "patch", "user": {"username": me, "groups": ["system:serviceaccounts"]},
            "sourceIPs": ["198.51.100.11", "198.51.100.1"],
            "objectRef": {"resource": "services", "namespace": "default", "name": "web",
                          "apiVersion": "v1", "subresource": "status"},
            "responseStatus": {"metadata": {}, "status": "Failure",
                               "message": "services \"web\" is forbidden", "code": 403},
            "requestReceivedTimestamp": "2026-12-07T15:04:09.000001Z",
            "stageTimestamp": "2026-12-07T15:04:09.250000Z",
        })
        .to_string();
        std::fs::write(
            &log,
            format!(
                "{}\n{{\"kind\":\"Event\",\"verb\":\"get\"\n{full}\n\n",
                line(me, &at(8), "get", None, "nodes", None)
            ),
        )
        .expect("write the log");
        // Two rotated copies, written newest first so the directory order cannot help.
        std::fs::write(
            dir.0.join("audit-2026-12-07T15-04-07.500.jsonl"),
            line(me, &at(6), "list", None, "services", None) + "\n",
        )
        .expect("write a copy");
        std::fs::write(
            dir.0.join("audit-2026-12-07T15-04-05.000.jsonl"),
            [
                line(me, &at(1), "watch", None, "services", None),
                "not json".to_string(),
                line("someone-else", &at(2), "get", None, "nodes", None),
            ]
            .join("\n"),
        )
        .expect("write a copy");
        // Neither the log nor one of its copies.
        std::fs::write(
            dir.0.join("other.jsonl"),
            line(me, &at(0), "get", None, "pods", None),
        )
        .expect("write another log");

        let names: Vec<String> = files(&log)
            .expect("files")
            .iter()
            .map(|p| {
                p.file_name()
                    .expect("a file")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "audit-2026-12-07T15-04-05.000.jsonl",
                "audit-2026-12-07T15-04-07.500.jsonl",
                "audit.jsonl"
            ]
        );

        let all = read(&log).expect("read");
        assert_eq!(all.malformed, 2, "`not json` and the cut line");
        let order: Vec<(&str, &str)> = all
            .events
            .iter()
            .map(|e| (e.user.as_str(), e.verb.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                (me, "watch"),
                ("someone-else", "get"),
                (me, "list"),
                (me, "get"),
                (me, "patch")
            ]
        );
        // 2026-12-07 is day 20794 since the epoch.
        let day_us = 20_794 * 86_400 * 1_000_000_i64;
        let patch = all.events.last().expect("the full event");
        assert_eq!(
            patch,
            &Event {
                user: me.into(),
                verb: "patch".into(),
                api_group: String::new(),
                resource: "services".into(),
                subresource: Some("status".into()),
                namespace: Some("default".into()),
                name: Some("web".into()),
                request_uri: "/api/v1/namespaces/default/services/web/status".into(),
                source_ips: vec!["198.51.100.11".into(), "198.51.100.1".into()],
                code: 403,
                message: "services \"web\" is forbidden".into(),
                stage: "ResponseComplete".into(),
                received_us: day_us + (15 * 3600 + 4 * 60 + 9) * 1_000_000 + 1,
                stage_us: day_us + (15 * 3600 + 4 * 60 + 9) * 1_000_000 + 250_000,
            }
        );
        assert_eq!(patch.resource_path(), "services/status");
        assert!(patch.is_write());
        assert!(!all.events[0].is_write());
        assert_eq!(all.events[0].resource_path(), "services");
        assert_eq!(all.events[0].code, 0, "no responseStatus");
        let healthz = Event::parse(
            &serde_json::json!({"stage": "ResponseComplete", "verb": "get",
                "user": {"username": me}, "requestURI": "/healthz",
                "requestReceivedTimestamp": at(1), "stageTimestamp": at(1)})
            .to_string(),
        )
        .expect("an event naming no resource");
        assert_eq!(
            (healthz.resource.as_str(), healthz.resource_path().as_str()),
            ("", "?")
        );

        let mine = read_user(&log, me).expect("read");
        assert_eq!(mine.events.len(), 4);
        assert!(mine.events.iter().all(|e| e.user == me));
        assert_eq!(mine.malformed, 0, "the malformed lines do not mention {me}");

        assert!(read(&dir.0.join("missing.jsonl")).is_err());
    }

    #[test]
    fn windows_include_both_ends_to_the_nanosecond() {
        let t = |s: &str| s.parse::<Timestamp>().expect("time");
        let from = t("2026-12-07T15:04:05.000001500Z");
        let to = t("2026-12-07T15:04:06.000002Z");
        let us = |s: &str| t(s).as_microsecond();
        assert!(!within(us("2026-12-07T15:04:05.000001Z"), from, to));
        assert!(within(us("2026-12-07T15:04:05.000002Z"), from, to));
        assert!(within(us("2026-12-07T15:04:06.000002Z"), from, to));
        assert!(!within(us("2026-12-07T15:04:06.000003Z"), from, to));
    }
}
