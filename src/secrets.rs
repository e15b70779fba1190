//! What may be shown of a secret. Hook ids, API keys, target URLs (which carry their
//! credentials in the path or query), passwords in URLs and webhook `headers` are secrets: logs,
//! errors and metrics show only what these helpers keep.

/// The part of a hook id that may be logged: its first 8 characters.
///
/// The id is the hook's only secret (whoever knows it can post alerts); 8 characters tell
/// hooks apart in logs without letting a log reader post to it.
pub fn hook_id_prefix(id: &str) -> String {
    let prefix: String = id.chars().take(8).collect();
    format!("{prefix}…")
}

/// `scheme://host[:port]` of a URL: the only part of a target or API URL that may be logged,
/// since webhook URLs carry their credentials in the path or query.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(u) => redact_url_parsed(&u),
        Err(_) => "<invalid url>".into(),
    }
}

/// [`redact_url`] of a URL already parsed.
pub fn redact_url_parsed(u: &url::Url) -> String {
    match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
        (Some(h), None) => format!("{}://{h}", u.scheme()),
        _ => format!("{}://", u.scheme()),
    }
}

/// `raw` with any `user[:password]@` after the scheme removed, even when `raw` is not a valid
/// URL: for errors that must show which value is wrong without echoing a password.
pub fn strip_userinfo(raw: &str) -> String {
    let Some(start) = raw.find("://").map(|i| i + 3) else {
        return raw.to_string();
    };
    // The authority ends at the first '/', '?' or '#'; userinfo is what precedes its last '@'.
    let end = raw[start..]
        .find(['/', '?', '#'])
        .map_or(raw.len(), |i| start + i);
    match raw[start..end].rfind('@') {
        Some(at) => format!("{}{}", &raw[..start], &raw[start + at + 1..]),
        None => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_stripped_even_from_broken_urls() {
        assert_eq!(
            strip_userinfo("https://bob:s3cret@api.sekoia.io/v1"),
            "https://api.sekoia.io/v1"
        );
        assert_eq!(
            strip_userinfo("https://bob:s3cret@exa mple:99999/x"),
            "https://exa mple:99999/x"
        );
        assert_eq!(strip_userinfo("https://a:b@c@host/p@q"), "https://host/p@q");
        assert_eq!(strip_userinfo("https://host/x"), "https://host/x");
        assert_eq!(strip_userinfo("not a url"), "not a url");
    }

    #[test]
    fn redacted_urls_never_keep_userinfo() {
        assert_eq!(
            redact_url("https://bob:s3cret@api.sekoia.io/v1"),
            "https://api.sekoia.io"
        );
    }

    #[test]
    fn urls_keep_only_scheme_and_host() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/secret?x=1"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9000/sink?sig=abc"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(redact_url("::nope"), "<invalid url>");
    }

    #[test]
    fn hook_ids_are_cut() {
        assert_eq!(
            hook_id_prefix("67a7472b-b43c-415d-b1ce-c135fb1dfb0e"),
            "67a7472b…"
        );
    }
}
