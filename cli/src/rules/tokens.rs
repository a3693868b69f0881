//! Splits one iptables rule line into words the way `iptables-save` quotes them: whitespace
//! separates, double quotes group (with `\"` and `\\` escapes inside), single quotes group
//! (pasted shell command lines use them). An unterminated quote runs to the end of the line.
//!
//! Owns nothing but the splitting; never fails, never panics.

/// The words of `line`.
pub(crate) fn split(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => match chars.peek() {
                            Some('"') | Some('\\') => {
                                if let Some(e) = chars.next() {
                                    cur.push(e);
                                }
                            }
                            _ => cur.push('\\'),
                        },
                        '"' => break,
                        other => cur.push(other),
                    }
                }
            }
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    cur.push(q);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            other => {
                in_word = true;
                cur.push(other);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn quotes_group_and_escapes_resolve() {
        assert_eq!(
            split(r#"-A X -m comment --comment "ns/svc:p80 cluster IP" -j Y"#),
            [
                "-A",
                "X",
                "-m",
                "comment",
                "--comment",
                "ns/svc:p80 cluster IP",
                "-j",
                "Y"
            ]
        );
        assert_eq!(
            split(r#"--comment "a \"b\" c""#),
            ["--comment", r#"a "b" c"#]
        );
        assert_eq!(
            split("--comment 'single quoted'"),
            ["--comment", "single quoted"]
        );
        assert_eq!(
            split(r#"--comment "unterminated"#),
            ["--comment", "unterminated"]
        );
        assert_eq!(split(r#"--comment """#), ["--comment", ""]);
        assert!(split("   ").is_empty());
    }
}
