//! The page's HTML: every text that did not come from this file is escaped, and the layout
//! links its one stylesheet and one script (no inline code, so the CSP can forbid it).

use std::fmt::Write;

/// `text` safe in HTML text and in double-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Who the page is for: the header shows their name and the sign-out form.
#[derive(Debug)]
pub struct Viewer<'a> {
    /// The signed-in person's UPN.
    pub upn: &'a str,
    /// The CSRF token for the sign-out form.
    pub csrf: &'a str,
    /// Whether they see the approvals link.
    pub approver: bool,
}

/// A whole page around `body` (already HTML).
pub fn page(title: &str, viewer: Option<&Viewer<'_>>, body: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · warden</title><link rel=\"stylesheet\" href=\"/static/app.css\">\
         <script src=\"/static/app.js\" defer></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a><header><nav aria-label=\"Main\">\
         <a href=\"/\">Tasks</a>",
        escape(title)
    );
    match viewer {
        Some(viewer) => {
            out.push_str("<a href=\"/runs\">Runs</a>");
            if viewer.approver {
                out.push_str("<a href=\"/approvals\">Approvals</a>");
            }
            let _ = write!(
                out,
                "<a href=\"/audit\">Audit</a></nav><form class=\"signout\" method=\"post\" \
                 action=\"/signout\"><span>{}</span><input type=\"hidden\" name=\"csrf\" \
                 value=\"{}\"><button type=\"submit\">Sign out</button></form>",
                escape(viewer.upn),
                escape(viewer.csrf)
            );
        }
        None => out.push_str("</nav><a class=\"signin\" href=\"/signin\">Sign in</a>"),
    }
    let _ = writeln!(
        out,
        "</header><main id=\"main\"><h1>{}</h1>{body}</main></body></html>",
        escape(title)
    );
    out
}

/// A run's results as rows and columns: an array's items are the rows (anything else is one
/// row, `null` none); the columns are every key of the rows that are objects, in first-seen
/// order, or none when no row is one (a single `Value` column). The HTML table and the CSV
/// download are both written from it, so they always show the same cells.
struct Table<'a> {
    rows: Vec<&'a serde_json::Value>,
    columns: Vec<&'a str>,
}

impl<'a> Table<'a> {
    fn of(results: &'a serde_json::Value) -> Self {
        let rows: Vec<&serde_json::Value> = match results {
            serde_json::Value::Array(items) => items.iter().collect(),
            serde_json::Value::Null => Vec::new(),
            other => vec![other],
        };
        let mut columns: Vec<&str> = Vec::new();
        for row in &rows {
            if let serde_json::Value::Object(map) = row {
                for key in map.keys() {
                    if !columns.contains(&key.as_str()) {
                        columns.push(key);
                    }
                }
            }
        }
        Self { rows, columns }
    }

    /// The header's cells.
    fn header(&self) -> Vec<&'a str> {
        if self.columns.is_empty() {
            vec!["Value"]
        } else {
            self.columns.clone()
        }
    }

    /// Each row's cells, as text.
    fn cells(&self) -> impl Iterator<Item = Vec<String>> + '_ {
        self.rows.iter().map(|row| {
            if self.columns.is_empty() {
                vec![cell(row)]
            } else {
                self.columns
                    .iter()
                    .map(|column| cell(row.get(*column).unwrap_or(&serde_json::Value::Null)))
                    .collect()
            }
        })
    }
}

/// Results as an HTML table, with the same cells as [`results_csv`].
pub fn results_table(results: &serde_json::Value) -> String {
    let table = Table::of(results);
    let mut out = String::from("<table><thead><tr>");
    for column in table.header() {
        let _ = write!(out, "<th scope=\"col\">{}</th>", escape(column));
    }
    out.push_str("</tr></thead><tbody>");
    for row in table.cells() {
        out.push_str("<tr>");
        for text in row {
            let _ = write!(out, "<td>{}</td>", escape(&text));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// One value as a cell's text: strings as they are, anything else as JSON.
pub fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Results as CSV, with the table's columns. A cell that a spreadsheet would read as a
/// formula (`=`, `+`, `-`, `@`, tab, CR) gets a leading `'`.
pub fn results_csv(results: &serde_json::Value) -> String {
    let table = Table::of(results);
    let defuse = |text: &str| {
        if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{text}")
        } else {
            text.to_owned()
        }
    };
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(table.header().into_iter().map(defuse));
    for row in table.cells() {
        let _ = writer.write_record(row.iter().map(String::as_str).map(defuse));
    }
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn everything_is_escaped() {
        let html = results_table(&json!([{"<b>": "<script>alert(1)</script>\"'&"}]));
        assert!(
            !html.contains("<script>") && !html.contains("<b>"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
        let page = page("<x>", None, "");
        assert!(page.contains("&lt;x&gt;") && page.contains(">Sign in</a>"));
    }

    #[test]
    fn the_table_and_the_csv_have_the_same_cells() {
        let results = json!([{"a": 1, "b": "x"}, {"b": "y", "c": null}, "loose"]);
        let html = results_table(&results);
        assert!(
            html.contains(
                "<th scope=\"col\">a</th><th scope=\"col\">b</th><th scope=\"col\">c</th>"
            ),
            "{html}"
        );
        assert!(
            html.contains("<tr><td></td><td>y</td><td></td></tr>"),
            "{html}"
        );
        assert_eq!(results_csv(&results), "a,b,c\n1,x,\n,y,\n,,\n");
        assert_eq!(results_csv(&json!(["=1", 2])), "Value\n'=1\n2\n");
        assert_eq!(
            results_table(&json!(null)),
            "<table><thead><tr><th scope=\"col\">Value</th></tr></thead><tbody></tbody></table>"
        );
    }

    #[test]
    fn csv_defuses_formulas() {
        let csv = results_csv(&json!([{"Name": "=HYPERLINK(\"x\")", "Size": 3}]));
        assert_eq!(csv, "Name,Size\n\"'=HYPERLINK(\"\"x\"\")\",3\n");
    }
}
