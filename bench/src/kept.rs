//! The hand-written part of a report: how to run, the method, where each target stands,
//! what limits speed and the decisions taken — between two markers in the existing output
//! file, carried into the new report (after the targets table) so a run does not erase it.

/// Opens the kept block.
pub const START: &str = "<!-- hand-written: jitgate-bench keeps this block -->";
/// Closes the kept block.
pub const END: &str = "<!-- /hand-written -->";

/// The block of `text` from [`START`] to [`END`], both included; `None` when either
/// marker is missing or out of order.
pub fn block(text: &str) -> Option<&str> {
    let start = text.find(START)?;
    let end = start + text[start..].find(END)? + END.len();
    Some(&text[start..end])
}

/// The kept block of the file at `path`, if it exists and has one.
pub fn from_file(path: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    block(&text).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_block_with_its_markers() {
        let text = format!("# r\n\n{START}\n## Analysis\ntext\n{END}\n## Throughput\n");
        assert_eq!(
            block(&text),
            Some(&*format!("{START}\n## Analysis\ntext\n{END}"))
        );
    }

    #[test]
    fn no_block_without_both_markers_in_order() {
        assert_eq!(block("# r\n## Throughput\n"), None);
        assert_eq!(block(&format!("{START}\nno end\n")), None);
        assert_eq!(block(&format!("{END}\n{START}\n")), None);
    }
}
