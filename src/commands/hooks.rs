//! `new-hook` and `urls`: what to paste into the config and into SEKOIA.IO.

use crate::configuration::Settings;

/// `new-hook`: a UUID v4 (122 random bits) is unguessable, and the snippet is ready to paste.
pub fn new_hook(name: &str) -> String {
    let id = uuid::Uuid::new_v4();
    format!(
        "[[hooks]]\nname = \"{name}\"\nid = \"{id}\"\ntargets = [\"console\"]   # the targets to notify\n"
    )
}

/// `urls`: one line per hook, `name<TAB>url`.
pub fn urls(settings: &Settings) -> String {
    let base = if settings.server.public_url.is_empty() {
        format!("http://{}", settings.server.listen)
    } else {
        settings.server.public_url.trim_end_matches('/').to_string()
    };
    let mut out = String::new();
    if settings.server.public_url.is_empty() {
        out.push_str("# server.public_url is not set: showing the local listen address\n");
    }
    for h in &settings.hooks {
        out.push_str(&format!("{}\t{}/hooks/{}\n", h.name, base, h.id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_hook_snippet_has_a_uuid() {
        let s = new_hook("soc");
        let id = s.split('"').nth(3).unwrap();
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    }
}
