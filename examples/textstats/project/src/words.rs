/// Counts whitespace-separated words.
pub fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_words() {
        assert_eq!(count_words("the quick  brown\nfox"), 4);
        assert_eq!(count_words(""), 0);
    }
}
