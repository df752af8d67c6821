//! Text a Spark client prints as it comes: `df.show()`'s table (Spark's layout: right-aligned
//! cells cut to `truncate` characters, `NULL` for nulls), its vertical form, and the HTML
//! table a notebook shows for a DataFrame.

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use super::error::{ConnectError, ConnectResult};

/// The cells of `batches` as text, row by row, with the column names.
fn cells(batches: &[RecordBatch]) -> ConnectResult<(Vec<String>, Vec<Vec<String>>)> {
    let options = FormatOptions::default()
        .with_null("NULL")
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S"))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S"));
    let mut header = Vec::new();
    let mut rows = Vec::new();
    for batch in batches {
        if header.is_empty() {
            header = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
        }
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ConnectError::internal(format!("formatting rows: {e}")))?;
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    Ok((header, rows))
}

fn cut(cell: &str, truncate: usize) -> String {
    let len = cell.chars().count();
    if truncate == 0 || len <= truncate {
        return cell.to_string();
    }
    if truncate < 4 {
        cell.chars().take(truncate).collect()
    } else {
        let mut out: String = cell.chars().take(truncate - 3).collect();
        out.push_str("...");
        out
    }
}

fn pad(cell: &str, width: usize, right_align: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(cell.chars().count()));
    if right_align {
        format!("{fill}{cell}")
    } else {
        format!("{cell}{fill}")
    }
}

/// `df.show(num_rows, truncate, vertical)`'s text for `batches` (which hold up to
/// `num_rows + 1` rows: one more tells that there are more to show).
pub fn show_string(
    batches: &[RecordBatch],
    schema_names: &[String],
    num_rows: usize,
    truncate: usize,
    vertical: bool,
) -> ConnectResult<String> {
    let (mut header, mut rows) = cells(batches)?;
    if header.is_empty() {
        header = schema_names.to_vec();
    }
    let has_more = rows.len() > num_rows;
    rows.truncate(num_rows);
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.iter().map(|c| cut(c, truncate)).collect())
        .collect();
    let mut out = String::new();
    if vertical {
        let name_width = header.iter().map(|h| h.chars().count()).max().unwrap_or(0);
        let value_width = rows
            .iter()
            .flatten()
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0);
        if rows.is_empty() {
            out.push_str("(0 rows)\n");
        }
        for (i, row) in rows.iter().enumerate() {
            let title = format!("-RECORD {i}");
            let line_width = name_width + value_width + 3;
            out.push_str(&title);
            out.push_str(&"-".repeat(line_width.saturating_sub(title.len())));
            out.push('\n');
            for (name, value) in header.iter().zip(row) {
                out.push_str(&format!(
                    " {} | {}\n",
                    pad(name, name_width, false),
                    pad(value, value_width, false)
                ));
            }
        }
    } else {
        let mut widths: Vec<usize> = header
            .iter()
            .map(|h| cut(h, truncate).chars().count().max(3))
            .collect();
        for row in &rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let rule: String = widths
            .iter()
            .map(|w| format!("+{}", "-".repeat(*w)))
            .collect::<String>()
            + "+\n";
        let right = truncate > 0;
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("|{}", pad(c, *w, right)))
                .collect::<String>()
                + "|\n"
        };
        out.push_str(&rule);
        let names: Vec<String> = header.iter().map(|h| cut(h, truncate)).collect();
        out.push_str(&line(&names));
        out.push_str(&rule);
        for row in &rows {
            out.push_str(&line(row));
        }
        out.push_str(&rule);
    }
    if has_more {
        let noun = if num_rows == 1 { "row" } else { "rows" };
        out.push_str(&format!("only showing top {num_rows} {noun}\n"));
    }
    Ok(out)
}

/// The rows of `batches` (up to `num_rows + 1`) as the HTML table a notebook shows for a
/// DataFrame: a header row of the column names, cells cut to `truncate` characters and
/// escaped, and a note when there were more rows than `num_rows`.
pub fn html_string(
    batches: &[RecordBatch],
    schema_names: &[String],
    num_rows: usize,
    truncate: usize,
) -> ConnectResult<String> {
    let (mut header, mut rows) = cells(batches)?;
    if header.is_empty() {
        header = schema_names.to_vec();
    }
    let has_more = rows.len() > num_rows;
    rows.truncate(num_rows);
    let row = |tag: &str, cells: &[String]| {
        let cells: String = cells
            .iter()
            .map(|c| format!("<{tag}>{}</{tag}>", escape_html(&cut(c, truncate))))
            .collect();
        format!("<tr>{cells}</tr>\n")
    };
    let mut out = String::from("<table border='1'>\n");
    out.push_str(&row("th", &header));
    for r in &rows {
        out.push_str(&row("td", r));
    }
    out.push_str("</table>\n");
    if has_more {
        let noun = if num_rows == 1 { "row" } else { "rows" };
        out.push_str(&format!("only showing top {num_rows} {noun}\n"));
    }
    Ok(out)
}

fn escape_html(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn tables_look_like_sparks() {
        let batch = RecordBatch::try_from_iter(vec![
            (
                "id",
                Arc::new(Int64Array::from(vec![Some(1), Some(22), None])) as _,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec!["a", "a rather long name here", "c"])) as _,
            ),
        ])
        .unwrap();
        let text = show_string(&[batch], &[], 2, 20, false).unwrap();
        assert_eq!(
            text,
            "+---+--------------------+\n\
             | id|                name|\n\
             +---+--------------------+\n\
             |  1|                   a|\n\
             | 22|a rather long nam...|\n\
             +---+--------------------+\n\
             only showing top 2 rows\n"
        );
    }

    #[test]
    fn vertical_rows_list_each_field() {
        let batch = RecordBatch::try_from_iter(vec![(
            "x",
            Arc::new(Int64Array::from(vec![None::<i64>])) as _,
        )])
        .unwrap();
        let text = show_string(&[batch], &[], 20, 0, true).unwrap();
        assert_eq!(text, "-RECORD 0\n x | NULL\n");
    }
}
