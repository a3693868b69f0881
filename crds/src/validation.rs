//! The CEL rules that let the API server itself reject malformed pools, with messages a person
//! understands. They are attached to the schema through `schema_with` functions.
//!
//! The rules only look at one object. Anything that spans objects (overlapping pools, a pool an
//! L2Advertisement names but that does not exist) is the controller's to report as a condition.
//! The controller re-checks everything here too, since a CRD installed by an older chart, or an object
//! stored before a rule existed, may hold values these rules would now reject.

use schemars::{Schema, SchemaGenerator, json_schema};

/// At most this many entries per pool: bounds the CEL cost estimate the API server computes.
/// Thirty-two ranges or CIDRs is far more than a pool needs; larger sets are split over pools.
pub const MAX_ADDRESSES: u32 = 32;
/// Longest entry: two fully written IPv6 addresses, a dash and some spaces.
pub const MAX_ADDRESS_LEN: u32 = 90;

// How the rules are written, and why:
// - The API server estimates each rule's worst-case cost from maxItems/maxLength and refuses the CRD
//   when it is too high. `cel.bind` is not available, `string(int)` and lists of lists are costed as
//   unbounded, so the range's two ends are spelled out with `substring`/`indexOf` each time.
// - CEL has no ordering on IP addresses. `start <= end` is decided bit by bit with the CIDR library:
//   start < end exactly when, at the first prefix length `n` where the two differ, bit `n` of start
//   is 0. Prefix pairs `n-1/n` come from literal string lists, whose sizes the estimator knows.

/// The text before the `-` of a range, trimmed.
const START: &str = "self.substring(0, self.indexOf('-')).trim()";
/// The text after the `-` of a range, trimmed.
const END: &str = "self.substring(self.indexOf('-') + 1).trim()";

/// An entry is a CIDR, or two addresses joined by `-`.
fn rule_form() -> String {
    format!("isCIDR(self) || (self.indexOf('-') > 0 && isIP({START}) && isIP({END}))")
}

/// Both ends of a range are of one family.
fn rule_family() -> String {
    format!(
        "!(self.indexOf('-') > 0 && isIP({START}) && isIP({END})) \
         || ip({START}).family() == ip({END}).family()"
    )
}

/// A range's start is not after its end.
fn rule_order() -> String {
    let pairs = |bits: u32| {
        (1..=bits)
            .map(|n| format!("'{}/{}'", n - 1, n))
            .collect::<Vec<_>>()
            .join(",")
    };
    let shorter = "q.substring(0, q.indexOf('/'))";
    let longer = "q.substring(q.indexOf('/') + 1)";
    format!(
        "!(self.indexOf('-') > 0 && isIP({START}) && isIP({END}) \
           && ip({START}).family() == ip({END}).family()) \
         || ip({START}) == ip({END}) \
         || (ip({START}).family() == 4 ? [{v4}] : [{v6}]).exists(q, \
              cidr({START} + '/' + {shorter}).containsIP({END}) \
              && !cidr({START} + '/' + {longer}).containsIP({END}) \
              && cidr({START} + '/' + {longer}).masked().ip() == cidr({START} + '/' + {shorter}).masked().ip())",
        v4 = pairs(32),
        v6 = pairs(128),
    )
}

/// Schema of `IPAddressPool.spec.addresses`.
pub fn addresses_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "CIDRs (198.51.100.0/24, 2001:db8::/120) or inclusive ranges (198.51.100.10-198.51.100.20).",
        "maxItems": MAX_ADDRESSES,
        "items": {
            "type": "string",
            "maxLength": MAX_ADDRESS_LEN,
            "x-kubernetes-validations": [
                {
                    "rule": rule_form(),
                    "messageExpression": "'\"' + self + '\" is not a CIDR (like 198.51.100.0/24) or an inclusive range (like 198.51.100.10-198.51.100.20)'",
                    "reason": "FieldValueInvalid"
                },
                {
                    "rule": rule_family(),
                    "messageExpression": "'range \"' + self + '\" mixes IPv4 and IPv6'",
                    "reason": "FieldValueInvalid"
                },
                {
                    "rule": rule_order(),
                    "messageExpression": "'range \"' + self + '\" is backwards: its start is after its end'",
                    "reason": "FieldValueInvalid"
                }
            ]
        },
        "x-kubernetes-validations": [
            {
                "rule": "size(self) > 0",
                "message": "addresses must list at least one CIDR or range",
                "reason": "FieldValueRequired"
            }
        ]
    })
}

/// The rules on `IPAddressPool.spec` that make a pool either an address pool or a node pool.
pub fn pool_kind_rules() -> serde_json::Value {
    serde_json::json!([
        {
            "rule": "has(self.addresses) || has(self.nodeAddresses)",
            "message": "a pool needs addresses (CIDRs or ranges of its own) or nodeAddresses (the nodes' own addresses, forwarder mode)",
            "reason": "FieldValueRequired"
        },
        {
            "rule": "!(has(self.addresses) && has(self.nodeAddresses))",
            "message": "addresses and nodeAddresses exclude each other: a pool either has addresses of its own or publishes node addresses",
            "reason": "FieldValueForbidden"
        }
    ])
}

/// Schema of `IPAddressPool.spec.nodeAddresses.cidrs`.
pub fn cidrs_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "Prefixes (198.51.100.0/24, 2001:db8::/64); only node addresses inside them are published.",
        "maxItems": 16,
        "items": {
            "type": "string",
            "maxLength": 64,
            "x-kubernetes-validations": [
                {
                    "rule": "isCIDR(self)",
                    "messageExpression": "'\"' + self + '\" is not a CIDR (like 198.51.100.0/24 or 2001:db8::/64)'",
                    "reason": "FieldValueInvalid"
                }
            ]
        }
    })
}

/// Schema of `IPAddressPool.spec.serviceAllocation.priority`.
pub fn priority_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "integer",
        "format": "int32",
        "nullable": true,
        "description": "Lower numbers are tried first; pools without a priority come last.",
        "x-kubernetes-validations": [
            {
                "rule": "self >= 0",
                "message": "priority must be 0 or greater (lower numbers are tried first)",
                "reason": "FieldValueInvalid"
            }
        ]
    })
}

/// Schema of `L2Advertisement.spec.interfaces`.
pub fn interfaces_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {
            "type": "string",
            "maxLength": 15,
            "x-kubernetes-validations": [
                {
                    "rule": "self.matches('^[^/\\\\s]+$')",
                    "messageExpression": "'\"' + self + '\" is not an interface name (1 to 15 characters, no slash or space)'",
                    "reason": "FieldValueInvalid"
                }
            ]
        }
    })
}
