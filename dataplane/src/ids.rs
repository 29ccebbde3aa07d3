//! Identifier rules. Ids end up inside storage keys (`sb:{tenant}:room:{id}:...`),
//! so their alphabet is closed: no `:`, braces or spaces can make one key look like another.

/// Tenant ids: 1–64 of `A-Z a-z 0-9 - _ .`.
pub fn valid_tenant(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// User and room ids: 1–128 of `A-Z a-z 0-9 - _ . @ +`.
pub fn valid_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@+".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_braces_are_refused() {
        for bad in ["", "a:b", "a}b", "{a", "a b", "é"] {
            assert!(!valid_tenant(bad) && !valid_id(bad), "{bad:?}");
        }
        assert!(valid_tenant("acme-1.eu_west"));
        assert!(valid_id("alice@example.com+1"));
        assert!(!valid_tenant(&"a".repeat(65)));
        assert!(!valid_id(&"a".repeat(129)));
    }
}
