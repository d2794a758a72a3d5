//! Statement labels: SQL reduced to a bounded label that holds no values, for metrics and
//! logs.

/// A label for `sql` that is safe to put in metrics and logs: the name of a leading
/// `/* name: load_user */` comment, or else the SQL with every literal and placeholder
/// replaced by `?` (`WHERE id = 42`, `WHERE id = $1` and `WHERE id = ?` are one label), a list
/// of them by one `?`, the rows of a multi-row `VALUES` by one row, comments dropped and
/// whitespace collapsed; at most `max` characters, then `…`. Never panics, whatever the text.
///
/// ```
/// use brisk_pool::statement_label;
///
/// assert_eq!(
///     statement_label("SELECT * FROM users WHERE id IN (1, 2, 3) AND name = 'x'", 200),
///     "SELECT * FROM users WHERE id IN (?) AND name = ?"
/// );
/// assert_eq!(statement_label("/* name: load_user */ SELECT ...", 200), "load_user");
/// ```
pub fn statement_label(sql: &str, max: usize) -> String {
    if let Some(name) = given_name(sql) {
        return truncate(name.to_owned(), max);
    }
    normalise(sql, max)
}

/// The name in a leading `/* name: load_user */` comment, if it is a plain identifier.
fn given_name(sql: &str) -> Option<&str> {
    let rest = sql.trim_start().strip_prefix("/*")?;
    let (comment, _) = rest.split_once("*/")?;
    let name = comment.trim().strip_prefix("name:")?.trim();
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    plain.then_some(name)
}

fn truncate(mut text: String, max: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(max) {
        text.truncate(at);
        text.push('…');
    }
    text
}

/// SQL with literals replaced by `?`, lists of them by one, rows of a multi-row `VALUES` by
/// one, comments dropped and whitespace collapsed; at most `max` characters (then `…`).
fn normalise(sql: &str, max: usize) -> String {
    let mut out = String::with_capacity(sql.len().min(max + 4));
    let mut chars = sql.chars().peekable();
    let mut count = 0;
    let mut space = false;
    while let Some(c) = chars.next() {
        if count >= max {
            // More text follows: cut (a quoted identifier may have gone past `max`) and mark.
            let mut out = truncate(out, max);
            if !out.ends_with('…') {
                out.push('…');
            }
            return out;
        }
        let piece: Piece = match c {
            '\'' => {
                // A string literal; '' is a quote inside it.
                while let Some(c) = chars.next() {
                    if c == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                Piece::Literal
            }
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                Piece::Literal
            }
            c if c.is_ascii_digit() && (space || !out.ends_with(is_word)) => {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.')
                {
                    chars.next();
                }
                Piece::Literal
            }
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                Piece::Space
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                Piece::Space
            }
            // SQLite's and MySQL's placeholder.
            '?' => Piece::Literal,
            c if c.is_whitespace() => Piece::Space,
            '"' => {
                // A quoted identifier, kept as written.
                let mut ident = String::from('"');
                for c in chars.by_ref() {
                    ident.push(c);
                    if c == '"' {
                        break;
                    }
                }
                Piece::Text(ident)
            }
            c => Piece::Char(c),
        };
        match piece {
            Piece::Space => space = !out.is_empty(),
            piece => {
                if space {
                    out.push(' ');
                    count += 1;
                    space = false;
                }
                match piece {
                    Piece::Literal => {
                        // `?, ?` is one `?`.
                        if out.ends_with("?, ") {
                            out.truncate(out.len() - 2);
                            count -= 2;
                        } else if out.ends_with("?,") {
                            out.truncate(out.len() - 1);
                            count -= 1;
                        } else {
                            out.push('?');
                            count += 1;
                        }
                    }
                    Piece::Text(text) => {
                        count += text.chars().count();
                        out.push_str(&text);
                    }
                    Piece::Char(c) => {
                        out.push(c);
                        count += 1;
                        // `(?), (?)` is one row.
                        if c == ')' && out.ends_with("(?), (?)") {
                            out.truncate(out.len() - ", (?)".len());
                            count -= ", (?)".len();
                        } else if c == ')' && out.ends_with("(?),(?)") {
                            out.truncate(out.len() - ",(?)".len());
                            count -= ",(?)".len();
                        }
                    }
                    Piece::Space => {}
                }
            }
        }
    }
    truncate(out, max)
}

enum Piece {
    Literal,
    Space,
    Text(String),
    Char(char),
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn label(sql: &str) -> String {
        statement_label(sql, 200)
    }

    #[test]
    fn literals_lists_rows_and_binds_fold_into_one_statement() {
        assert_eq!(
            label(r#"SELECT "users"."id" FROM "users" WHERE "users"."id" = $1 -- binds: [42]"#),
            r#"SELECT "users"."id" FROM "users" WHERE "users"."id" = ?"#
        );
        assert_eq!(
            label("select * from t where id = 42 and name = 'O''Brien'"),
            label("select  *\n from t where id = 7 and name = 'x'"),
        );
        assert_eq!(
            label("SELECT * FROM t WHERE id IN ($1, $2, $3) -- binds: [1, 2, 3]"),
            "SELECT * FROM t WHERE id IN (?)"
        );
        assert_eq!(
            label("SELECT * FROM t WHERE id IN (1,2,3,4)"),
            "SELECT * FROM t WHERE id IN (?)"
        );
        assert_eq!(
            label(
                "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) -- binds: [1, 2, 3, 4, 5, 6]"
            ),
            "INSERT INTO t (a, b) VALUES (?)"
        );
        assert_eq!(
            label("SELECT col2, t1.x FROM t1 -- trailing\n /* note */ LIMIT 10"),
            "SELECT col2, t1.x FROM t1 LIMIT ?"
        );
        assert_eq!(label("SELECT 1"), "SELECT ?");
        assert_eq!(
            label("INSERT INTO t (id, name) VALUES (?, ?) -- binds: [1, \"a\"]"),
            "INSERT INTO t (id, name) VALUES (?)"
        );
        assert_eq!(label("SELECT 1.5e3"), "SELECT ?");
    }

    #[test]
    fn a_name_comment_is_the_label_and_long_text_is_cut() {
        assert_eq!(
            label("/* name: load_user */ SELECT * FROM users WHERE id = $1 -- binds: [1]"),
            "load_user"
        );
        // Not a plain name: the SQL is the label.
        assert_eq!(label("/* name: a b */ SELECT 1"), "SELECT ?");
        let long = format!("SELECT {} FROM t", "column_name, ".repeat(50));
        let cut = statement_label(&long, 40);
        assert_eq!(cut.chars().count(), 41);
        assert!(cut.ends_with('…'));
    }

    proptest! {
        #[test]
        fn any_text_gives_a_bounded_label(
            text in "(?s).{0,600}",
            max in 1..300_usize,
        ) {
            let out = statement_label(&text, max);
            prop_assert!(out.chars().count() <= max + 1, "{out:?}");
        }

        #[test]
        fn numbers_and_strings_never_reach_the_label(
            n in any::<u64>(),
            s in "[a-z0-9 ]{0,20}",
        ) {
            let sql = format!("SELECT * FROM t WHERE a = {n} AND b = '{s}' AND c = ${n}");
            let out = label(&sql);
            prop_assert_eq!(out, "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?");
        }
    }
}
