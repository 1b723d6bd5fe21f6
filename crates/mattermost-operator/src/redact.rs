//! Scrubbing of text that comes from pods or the API before it reaches status or events.
//!
//! Termination messages fall back to a pod's last log lines, and API messages can echo field
//! values, so anything foreign is passed through [`message`]: one line, credentials removed
//! (connection-string user info, `password=`-style pairs, bearer tokens, JWTs, AWS key ids and the
//! values of the Secrets the installation references), then truncated. Secret values are held in
//! [`Secrets`] only for the reconcile that read them; it never prints them.

use std::sync::LazyLock;

use mattermost_api::v1beta1::MattermostStatus;
use regex::Regex;

/// What replaces a credential.
pub const MARKER: &str = "[redacted]";
/// Longest message kept in a condition or `status.error`.
pub const MAX_STATUS_MESSAGE: usize = 512;
/// Longest event note the API accepts (bytes).
pub const MAX_EVENT_NOTE: usize = 1024;
/// Shortest Secret value that is scrubbed: shorter ones would blank ordinary words.
const MIN_SECRET_LEN: usize = 4;

/// Credential patterns and their replacement.
const PATTERNS: [(&str, &str); 6] = [
    // URL user info: scheme://user:pass@host -> scheme://[redacted]@host (greedy to the last `@`
    // before the path, so an unencoded `@` in a password is covered too).
    (r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/]*@", "${1}[redacted]@"),
    // DSNs without a scheme: user:pass@tcp(host) and user:pass@host.
    (
        r#"(^|[\s"'=(,;\[{])[^\s:/@"'=]+:([^\s@"'/][^\s@"']*)?@"#,
        "${1}[redacted]@",
    ),
    // key=value / key: value pairs whose key names a credential (also quoted JSON keys).
    (
        r#"(?i)([a-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|credentials?|signature|auth)["']?\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s&;,'"}\]]+)"#,
        "${1}[redacted]",
    ),
    // HTTP authorization schemes.
    (
        r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}",
        "${1} [redacted]",
    ),
    // JSON web tokens.
    (
        r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*",
        "[redacted]",
    ),
    // AWS access key ids.
    (r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", "[redacted]"),
];

static COMPILED: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    PATTERNS
        .iter()
        .filter_map(|(p, r)| Regex::new(p).ok().map(|re| (re, *r)))
        .collect()
});

/// Removes credentials that have a recognisable shape.
pub fn scrub(text: &str) -> String {
    let mut out = text.to_owned();
    for (re, replacement) in COMPILED.iter() {
        if re.is_match(&out) {
            out = re.replace_all(&out, *replacement).into_owned();
        }
    }
    out
}

/// Collapses every run of whitespace (including newlines) into one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` bytes of `text`, cut on a character boundary, ending in "…" when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// At most `max` bytes of the end of `text` (log tails end with the error), starting with "…"
/// when cut.
pub fn truncate_tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

/// Foreign text made fit for status: one line, scrubbed, at most [`MAX_STATUS_MESSAGE`] bytes.
pub fn message(text: &str) -> String {
    truncate(&scrub(&one_line(text)), MAX_STATUS_MESSAGE)
}

/// Like [`message`], keeping the end (for termination messages, which are log tails).
pub fn message_tail(text: &str) -> String {
    truncate_tail(&scrub(&one_line(text)), MAX_STATUS_MESSAGE)
}

/// The API server's own sentence for a failed request (`Status.message`), not a debug dump.
pub fn api_message(e: &kube::Error) -> String {
    let text = match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        kube::Error::Api(status) if !status.reason.is_empty() => status.reason.clone(),
        other => other.to_string(),
    };
    message(&text)
}

/// Values of the Secrets an installation references, kept for one reconcile so that foreign text
/// can be scrubbed of them. `Debug` shows only how many there are.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.0.len())
    }
}

impl Secrets {
    /// Remembers `value` and, for a URL with user info, its password and user info.
    pub fn add(&mut self, value: &[u8]) {
        let Ok(text) = std::str::from_utf8(value) else {
            return;
        };
        let text = text.trim();
        let mut candidates = vec![text.to_owned()];
        if let Some((_, rest)) = text.split_once("://")
            && let Some((userinfo, _)) = rest.rsplit_once('@')
        {
            candidates.push(userinfo.to_owned());
            if let Some((_, password)) = userinfo.split_once(':') {
                candidates.push(password.to_owned());
            }
        }
        for c in candidates {
            if c.len() >= MIN_SECRET_LEN && !MARKER.contains(c.as_str()) && !self.0.contains(&c) {
                self.0.push(c);
            }
        }
        // Longest first, so a value is replaced before any of its parts.
        self.0.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }

    /// Remembers every value of `secret`.
    pub fn add_secret(&mut self, secret: &k8s_openapi::api::core::v1::Secret) {
        for v in secret.data.iter().flat_map(|d| d.values()) {
            self.add(&v.0);
        }
        for v in secret.string_data.iter().flat_map(|d| d.values()) {
            self.add(v.as_bytes());
        }
    }

    /// Remembers every value of `secret` and hands it back (for reading it once).
    pub fn with<'a>(
        &mut self,
        secret: &'a k8s_openapi::api::core::v1::Secret,
    ) -> &'a k8s_openapi::api::core::v1::Secret {
        self.add_secret(secret);
        secret
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no value is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` without the held values, then without credential shapes.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for v in &self.0 {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MARKER);
            }
        }
        scrub(&out)
    }

    /// Scrubs every human-readable text of `status` (conditions, error, patch errors), keeping
    /// the length limit.
    pub fn scrub_status(&self, status: &mut MattermostStatus) {
        let clean = |s: &str| truncate(&self.scrub(s), MAX_STATUS_MESSAGE);
        for c in &mut status.conditions {
            c.message = clean(&c.message);
        }
        if let Some(e) = status.error.as_mut() {
            *e = clean(e);
        }
        if let Some(rp) = status.resource_patch.as_mut() {
            for p in [rp.service_patch.as_mut(), rp.deployment_patch.as_mut()]
                .into_iter()
                .flatten()
            {
                if let Some(e) = p.error.as_mut() {
                    *e = clean(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use proptest::prelude::*;

    #[test]
    fn every_pattern_compiles() {
        assert_eq!(COMPILED.len(), PATTERNS.len());
    }

    #[test]
    fn connection_strings_lose_their_user_info() {
        for (input, expected) in [
            (
                "dial postgres://mmuser:s3cr3t@db.example:5432/mm?sslmode=disable failed",
                "dial postgres://[redacted]@db.example:5432/mm?sslmode=disable failed",
            ),
            ("mysql://u:p@ss@h/db", "mysql://[redacted]@h/db"),
            (
                "dsn mmuser:pw@tcp(db:3306)/mattermost?charset=utf8mb4",
                "dsn [redacted]@tcp(db:3306)/mattermost?charset=utf8mb4",
            ),
            (
                "https://example.com/path?x=1 is fine",
                "https://example.com/path?x=1 is fine",
            ),
        ] {
            assert_eq!(scrub(input), expected);
        }
    }

    #[test]
    fn credential_pairs_tokens_and_keys_are_removed() {
        let cases = [
            ("host=db password=hunter2 user=mm", "hunter2"),
            ("\"password\": \"hunter2\"", "hunter2"),
            ("PGPASSWORD='hunter2'", "hunter2"),
            ("MM_SQLSETTINGS_DATASOURCE_PASSWORD: hunter2", "hunter2"),
            ("Authorization: Bearer abcdefghijkl.mnop", "abcdefghijkl"),
            ("token eyJhbGciOi.eyJzdWIiOiIx.c2lnbmF0dXJl", "eyJzdWIiOiIx"),
            ("key AKIAABCDEFGHIJKLMNOP used", "AKIAABCDEFGHIJKLMNOP"),
            ("?X-Amz-Signature=deadbeef&x=1", "deadbeef"),
            ("api_key=zzz123", "zzz123"),
        ];
        for (input, secret) in cases {
            let out = scrub(input);
            assert!(!out.contains(secret), "{input:?} -> {out:?}");
            assert!(out.contains(MARKER), "{input:?} -> {out:?}");
        }
        let benign = "Back-off pulling image \"mattermost/mattermost-enterprise-edition:10.8.1\"";
        assert_eq!(scrub(benign), benign);
        let digest = "image@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(scrub(digest), digest);
    }

    #[test]
    fn secret_values_and_their_url_parts_are_removed() {
        let mut s = Secrets::default();
        s.add(b"postgres://mmuser:pa55word-x@db:5432/mm");
        s.add(b"ab");
        assert_eq!(format!("{s:?}"), "Secrets(3 values)", "no value in Debug output");
        let out = s.scrub("login failed with pa55word-x for postgres://mmuser:pa55word-x@db:5432/mm");
        assert!(!out.contains("pa55word-x"), "{out}");
        assert_eq!(s.scrub("ab cd"), "ab cd", "short values are left alone");
    }

    #[test]
    fn status_texts_are_scrubbed_and_bounded() {
        let mut s = Secrets::default();
        s.add(b"topsecretvalue");
        let mut st = MattermostStatus {
            error: Some(format!("x topsecretvalue {}", "y".repeat(2000))),
            conditions: vec![Condition {
                message: "password=abc topsecretvalue".into(),
                type_: "Degraded".into(),
                status: "True".into(),
                reason: "X".into(),
                observed_generation: None,
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-01-01T00:00:00Z".parse().unwrap(),
                ),
            }],
            ..Default::default()
        };
        s.scrub_status(&mut st);
        let err = st.error.unwrap();
        assert!(!err.contains("topsecretvalue") && err.len() <= MAX_STATUS_MESSAGE);
        assert!(!st.conditions[0].message.contains("topsecretvalue"));
        assert!(!st.conditions[0].message.contains("abc"));
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcdef", 5), "ab…");
        assert_eq!(truncate("ééééé", 6), "é…");
        assert_eq!(truncate_tail("abcdef", 5), "…ef");
        assert_eq!(one_line(" a\n\tb  c \n"), "a b c");
    }

    #[test]
    fn api_message_is_the_status_message() {
        let status =
            kube::core::Status::failure("Service \"x\" is invalid: metadata.name: too long", "Invalid");
        let e = kube::Error::Api(Box::new(status));
        assert_eq!(
            api_message(&e),
            "Service \"x\" is invalid: metadata.name: too long"
        );
    }

    proptest! {
        #[test]
        fn a_held_secret_never_survives(
            secret in "[A-Za-z0-9!#%&*+_.-]{4,40}",
            before in "\\PC{0,60}",
            after in "\\PC{0,60}",
        ) {
            prop_assume!(!MARKER.contains(secret.as_str()));
            let mut s = Secrets::default();
            s.add(secret.as_bytes());
            let out = s.scrub(&format!("{before}{secret}{after}"));
            prop_assert!(!out.contains(&secret), "{out}");
        }

        #[test]
        fn url_passwords_never_survive(
            scheme in "(postgres|postgresql|mysql|https?|redis)",
            user in "[a-z][a-z0-9]{0,10}",
            password in "[A-Za-z0-9!$&()*+,;=._~-]{6,30}",
            host in "[a-z]{1,10}(\\.[a-z]{2,5})?(:[0-9]{2,5})?",
            prefix in "[ -~]{0,30}",
        ) {
            let text = format!("{prefix} {scheme}://{user}:{password}@{host}/db");
            let out = message(&text);
            prop_assert!(!out.contains(&format!(":{password}@")), "{out}");
            prop_assert!(!out.contains(&password) || prefix.contains(&password) || host.contains(&password), "{out}");
        }

        #[test]
        fn messages_are_bounded_single_lines_and_scrubbing_is_idempotent(text in "\\PC{0,2000}|(.|\n){0,800}") {
            let m = message(&text);
            prop_assert!(m.len() <= MAX_STATUS_MESSAGE);
            prop_assert!(!m.contains('\n'));
            let once = scrub(&text);
            prop_assert_eq!(scrub(&once), once);
            prop_assert!(message_tail(&text).len() <= MAX_STATUS_MESSAGE);
        }
    }
}
