//! `healthcheck`: the container's probe, without curl in the image.

use crate::configuration::Settings;

/// `healthcheck`: GET /healthz on the listen address (0.0.0.0 is reached via 127.0.0.1).
pub async fn healthcheck(settings: &Settings) -> bool {
    let addr = settings
        .server
        .listen
        .replace("0.0.0.0:", "127.0.0.1:")
        .replace("[::]:", "[::1]:");
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(_) => return false,
    };
    matches!(
        client.get(format!("http://{addr}/healthz")).send().await,
        Ok(r) if r.status().is_success()
    )
}
