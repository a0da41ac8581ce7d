//! Broker and store URLs as an operator writes them: a `;`-separated list of nodes, shown with
//! the password hidden.

/// The URL with its password hidden, for messages and logs: `amqp://guest:***@host/%2f`. A
/// list of URLs separated by `;` is redacted one by one. Without credentials a URL is returned
/// as given; one the `url` crate cannot parse loses everything before its last `@`.
pub fn redact(url: &str) -> String {
    split_urls(url)
        .iter()
        .map(|u| redact_one(u))
        .collect::<Vec<_>>()
        .join(";")
}

/// The URLs of a `;`-separated list, as Celery's `broker_url` takes several nodes of a cluster.
/// A `;` starts the next URL only where a scheme follows: a password may hold one too.
pub fn split_urls(list: &str) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for piece in list.split(';') {
        match urls.last_mut() {
            Some(last) if !starts_with_scheme(piece) => {
                last.push(';');
                last.push_str(piece);
            }
            _ if piece.trim().is_empty() => {}
            _ => urls.push(piece.trim().to_string()),
        }
    }
    urls
}

fn starts_with_scheme(s: &str) -> bool {
    s.split_once("://").is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

fn redact_one(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            // Only fails for URLs that cannot have credentials, and these have none.
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => match (url.split_once("://"), url.rsplit_once('@')) {
            (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
            _ => url.to_string(),
        },
    }
}

/// `host:port` of a broker URL, the short name a status table shows for a node.
pub fn host_port(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or("?"),
            u.port()
                .unwrap_or(if u.scheme() == "amqps" { 5671 } else { 5672 })
        ),
        Err(_) => redact(url),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_the_password_only() {
        for (url, shown) in [
            (
                "amqp://guest:secret@127.0.0.1:5672/%2f",
                "amqp://guest:***@127.0.0.1:5672/%2f",
            ),
            ("amqp://127.0.0.1", "amqp://127.0.0.1"),
            (
                "postgres://postgres@127.0.0.1:5432/cm",
                "postgres://postgres:***@127.0.0.1:5432/cm",
            ),
            (
                "amqp://u:p%40ss@h1/v;amqp://h2/v;amqp://w:x@h3:5673/v?heartbeat=5",
                "amqp://u:***@h1/v;amqp://h2/v;amqp://w:***@h3:5673/v?heartbeat=5",
            ),
            ("sqlite:///srv/cm/var/cm.db", "sqlite:///srv/cm/var/cm.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            // A `;` in a password does not start a new URL.
            ("amqp://u:pa;ss@h/v;amqp://h2", "amqp://u:***@h/v;amqp://h2"),
            // The `url` crate cannot parse it: all before the `@` goes.
            ("amqp://u:secret@h:99999/v", "amqp://***@h:99999/v"),
        ] {
            assert_eq!(super::redact(url), shown, "{url}");
        }
    }
}
