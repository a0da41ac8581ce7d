//! Hostlists (`i[1-3]`, `r[1-2]n[01-10]`, `a1,b2`): sized before they are expanded, on every
//! path that takes one (`--hosts`, `[queues.NAME] workers`, the web and `/api/`, a `cm.launch`
//! message's `hosts`), so that a typo like `i[1-100000000]` is refused at once instead of
//! growing a hundred million strings.

/// A host name longer than this is no host (DNS's own limit on a whole name).
pub const MAX_NAME: usize = 253;
/// A hostlist longer than this is not one a person wrote; refused before it is read further.
pub const MAX_TEXT: usize = 64 * 1024;

/// What a hostlist names, counted without expanding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// How many names it expands to at most (duplicates are counted; expanding drops them).
    pub hosts: u128,
    /// The longest name it can expand to, in bytes, at most.
    pub longest: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostlistError {
    #[error("names no host")]
    Empty,
    #[error("names {hosts} hosts, more than {max}")]
    TooMany { hosts: u128, max: usize },
    #[error("makes host names of up to {0} bytes, longer than {MAX_NAME}")]
    TooLong(usize),
    #[error("is not a hostlist (e.g. i[1-3] or a1,b2): {0}")]
    Malformed(String),
}

/// Sizes `text` without expanding it: one pass over its characters, no allocation per host.
/// Anything the expander could read differently is refused here, so that a size is always an
/// upper bound of what [`expand`] makes.
pub fn size(text: &str) -> Result<Size, HostlistError> {
    let bad = |why: String| Err(HostlistError::Malformed(why));
    if text.len() > MAX_TEXT {
        return bad(format!("{} bytes, more than {MAX_TEXT}", text.len()));
    }
    if text.trim().is_empty() {
        return Err(HostlistError::Empty);
    }
    let mut total: u128 = 0;
    let mut longest = 0;
    // The item being read: hosts it makes, its longest name, whether it has a name yet.
    let (mut item, mut item_len, mut item_named) = (1u128, 0usize, false);
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            ',' => {
                if !item_named {
                    return bad(format!("an empty host name before the ',' at {}", at + 1));
                }
                total = total.saturating_add(item);
                longest = longest.max(item_len);
                (item, item_len, item_named) = (1, 0, false);
            }
            '[' => {
                let mut group: u128 = 0;
                let mut widest = 0;
                let mut closed = false;
                let mut range = String::new();
                for (at, c) in chars.by_ref() {
                    match c {
                        ']' | ',' => {
                            let (n, width) = range_size(&range)?;
                            group = group.saturating_add(n);
                            widest = widest.max(width);
                            range.clear();
                            if c == ']' {
                                closed = true;
                                break;
                            }
                        }
                        '0'..='9' | '-' | ' ' => range.push(c),
                        _ => {
                            return bad(format!(
                                "{c:?} at {} in a range (ranges are digits: [1-3,7])",
                                at + 1
                            ))
                        }
                    }
                }
                if !closed {
                    return bad(format!("the '[' at {} is never closed", at + 1));
                }
                item = item.saturating_mul(group);
                item_len = item_len.saturating_add(widest);
                item_named = true;
            }
            ']' => return bad(format!("a ']' at {} closes no '['", at + 1)),
            ' ' => {}
            c if c.is_ascii_alphanumeric() || c == '-' || c == '.' => {
                item_len += 1;
                item_named = true;
            }
            c => {
                return bad(format!(
                    "{c:?} at {} (a host name is letters, digits, '-' and '.')",
                    at + 1
                ))
            }
        }
    }
    if !item_named {
        return bad("it ends with a ','".into());
    }
    Ok(Size {
        hosts: total.saturating_add(item),
        longest: longest.max(item_len),
    })
}

/// The hosts of one range inside brackets (`7`, `01-10`, `9-3`) and the widest number it
/// makes.
fn range_size(range: &str) -> Result<(u128, usize), HostlistError> {
    let number = |s: &str| -> Result<u64, HostlistError> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HostlistError::Malformed(format!(
                "{:?} is not a range (e.g. 1-3 or 7)",
                range.trim()
            )));
        }
        s.parse()
            .map_err(|_| HostlistError::Malformed(format!("{s} is too large a number for a range")))
    };
    let (lo, hi, width) = match range.split_once('-') {
        Some((lo, hi)) => (number(lo)?, number(hi)?, lo.trim().len() + hi.trim().len()),
        None => {
            let n = number(range)?;
            (n, n, range.trim().len())
        }
    };
    // A reversed range (`9-3`) counts down: as many hosts as the other way.
    Ok((u128::from(lo.abs_diff(hi)) + 1, width))
}

/// `text` quoted for a message, cut after [`QUOTED`] characters: a refusal names what it
/// refused without repeating a whole message's worth of it.
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED) {
        Some((at, _)) => format!("{:?}...", &text[..at]),
        None => format!("{text:?}"),
    }
}

/// How much of a refused hostlist a message repeats.
const QUOTED: usize = 80;

/// The hosts of `text`, refused before expanding when it names more than `max` or names
/// longer than a host's.
pub fn expand(text: &str, max: usize) -> Result<Vec<String>, HostlistError> {
    let size = size(text)?;
    if size.hosts > max as u128 {
        return Err(HostlistError::TooMany {
            hosts: size.hosts,
            max,
        });
    }
    if size.longest > MAX_NAME {
        return Err(HostlistError::TooLong(size.longest));
    }
    let hosts = hostlist_parser::parse(text.trim()).map_err(|e| {
        let why = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        HostlistError::Malformed(why)
    })?;
    if hosts.is_empty() {
        return Err(HostlistError::Empty);
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(text: &str) -> Result<u128, HostlistError> {
        size(text).map(|s| s.hosts)
    }

    #[test]
    fn sizes_multiply_ranges_without_expanding() {
        assert_eq!(hosts("i[1-3]"), Ok(3));
        assert_eq!(hosts("a1,b2"), Ok(2));
        assert_eq!(hosts("r[1-2]n[01-10]"), Ok(20));
        assert_eq!(hosts("i[1-3,7],j"), Ok(5));
        assert_eq!(hosts(" a , b "), Ok(2));
        assert_eq!(hosts("i[1-100000000]"), Ok(100_000_000));
        assert_eq!(hosts("i[100000000-1]"), Ok(100_000_000), "reversed");
        assert_eq!(
            hosts("a[1-18446744073709551615][1-18446744073709551615][1-9]"),
            Ok(u128::MAX),
            "saturates"
        );
        assert_eq!(size("n[001-120].x").map(|s| s.longest), Ok(1 + 6 + 2));
    }

    #[test]
    fn what_the_expander_could_read_otherwise_is_refused() {
        for bad in [
            "i[1-",
            "i[]",
            "i[a-b]",
            "i[1-2[3]]",
            "i]",
            "a,,b",
            "a,",
            ",a",
            "a\nb",
            "a;b",
            "a/b",
            "i[1-99999999999999999999]",
        ] {
            assert!(
                matches!(size(bad), Err(HostlistError::Malformed(_))),
                "{bad:?}: {:?}",
                size(bad)
            );
        }
        assert_eq!(size("  "), Err(HostlistError::Empty));
        assert_eq!(quoted("a\nb"), "\"a\\nb\"");
        assert_eq!(quoted(&"é".repeat(100)), format!("{:?}...", "é".repeat(80)));
        assert!(size(&"a".repeat(MAX_TEXT + 1)).is_err());
    }

    #[test]
    fn expanding_is_capped_before_it_starts() {
        assert_eq!(expand("i[1-3]", 10).map(|l| l.len()), Ok(3));
        assert_eq!(
            expand("i[1-11]", 10),
            Err(HostlistError::TooMany { hosts: 11, max: 10 })
        );
        let started = std::time::Instant::now();
        assert!(expand("i[1-100000000]", 1000).is_err());
        assert!(expand("i[100000000-1]", 1000).is_err());
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert!(matches!(
            expand(&format!("{}[1-2]", "a".repeat(300)), 10),
            Err(HostlistError::TooLong(_))
        ));
        assert_eq!(
            expand("n[01-03]", 10),
            Ok(vec!["n01".into(), "n02".into(), "n03".into()])
        );
    }
}
