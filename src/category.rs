//! The category-path rule, the one place a path is read: `A > B > C`
//! (parts separated by `>`, with or without spaces around it; empty parts
//! dropped) cut at a level is its first `level` parts joined by ` > `.
//! Used by the candidates (`cross_category`, segment summaries), the
//! evaluation's category slices and, as the SQL function `category_at`,
//! its beyond-accuracy diversity.

/// `path` cut at `level` parts (None when it has no part).
pub(crate) fn at(path: &str, level: usize) -> Option<String> {
    let parts: Vec<&str> = path.split('>').map(str::trim).filter(|p| !p.is_empty()).take(level).collect();
    (!parts.is_empty()).then(|| parts.join(" > "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cut_at_a_level_whatever_their_spacing() {
        assert_eq!(at("Home > Kitchen > Pans", 1).as_deref(), Some("Home"));
        assert_eq!(at("Home > Kitchen > Pans", 2).as_deref(), Some("Home > Kitchen"));
        assert_eq!(at("Home>Kitchen>Pans", 2).as_deref(), Some("Home > Kitchen"));
        assert_eq!(at(" Home >  > Kitchen ", 2).as_deref(), Some("Home > Kitchen"));
        assert_eq!(at("Home", 3).as_deref(), Some("Home"));
        assert_eq!(at("  ", 1), None);
        assert_eq!(at(" > ", 1), None);
    }
}
