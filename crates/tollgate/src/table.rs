//! Aligned plain-text tables, psql style.

/// Prints a header, a rule and rows, each column as wide as its widest cell.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut out = String::new();
    render(&mut out, headers, rows);
    print!("{out}");
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn render(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| width(h)).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(width(c));
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!(" {c}{} ", " ".repeat(w - width(c))))
            .collect();
        parts.join("|").trim_end().to_string()
    };
    out.push_str(&line(&mut headers.iter().copied()));
    out.push('\n');
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+"),
    );
    out.push('\n');
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_columns() {
        let mut out = String::new();
        super::render(
            &mut out,
            &["id", "name"],
            &[
                vec!["1".into(), "alice".into()],
                vec!["22".into(), "é".into()],
            ],
        );
        assert_eq!(out, " id | name\n----+-------\n 1  | alice\n 22 | é\n");
    }
}
