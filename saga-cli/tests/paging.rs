//! `saga list --limit N` prints the cursor of the next page, and
//! `--after <cursor>` lists from there: pages never repeat or skip an
//! execution.

mod support;

use support::*;

#[tokio::test]
async fn list_pages_with_the_cursor_it_prints() {
    let dir = dir("paging");
    let db = populated(&dir).await;
    let all: Vec<String> = ok(&db, &["list"])
        .lines()
        .skip(1)
        .take(3)
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(all.len(), 3);
    let mut seen = Vec::new();
    let mut args = vec!["list".to_owned(), "--limit".to_owned(), "1".to_owned()];
    loop {
        let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
        let text = ok(&db, &args_ref);
        let first = text.lines().nth(1).unwrap();
        if first.starts_with(|c: char| c.is_ascii_digit()) {
            // "0 executions": past the end.
            break;
        }
        seen.push(first.split_whitespace().next().unwrap().to_owned());
        let Some(next) = text
            .lines()
            .find_map(|l| l.strip_prefix("next page: `--after "))
        else {
            assert!(text.ends_with("1 execution\n"), "{text}");
            break;
        };
        let cursor = next.trim_end_matches('`').to_owned();
        args = vec![
            "list".to_owned(),
            "--limit".to_owned(),
            "1".to_owned(),
            "--after".to_owned(),
            cursor,
        ];
    }
    assert_eq!(seen, all);

    let err = fails(&db, &["list", "--after", "yesterday"], 2);
    assert!(
        err.contains("`yesterday` is not a listing cursor (expected `<created_at_ms>:<id>`"),
        "{err}"
    );
}
