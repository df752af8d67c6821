//! `ember sql`'s statements and shell: SQL text is cut into statements by the SQL
//! tokenizer (a `;` inside a comment, a string or a quoted name does not end a statement),
//! and with no query the shell reads statements interactively with line editing and
//! history.

use std::time::Instant;

use anyhow::Context;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::cli::Format;
use crate::connect::client::ConnectClient;
use crate::session::Session;

/// Where statements run.
pub(crate) enum Target {
    /// A session of this process (a local cluster).
    Local(Session),
    /// A running `ember server`, over Spark Connect.
    Remote {
        /// The client.
        client: Box<ConnectClient>,
        /// Its URL, for the banner.
        url: String,
    },
}

/// What cutting SQL text into statements found.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    /// Statements ended by `;` (or by the end of the text, for [`split_statements`]).
    pub statements: Vec<String>,
    /// Text after the last `;` that holds more than whitespace and comments.
    pub rest: String,
}

/// Turns the tokenizer's locations (1-based line and column, in characters) into byte
/// offsets, moving forward only: locations asked for never go back, so a whole script is
/// walked once.
struct Offsets<'a> {
    text: &'a str,
    byte: usize,
    line: u64,
    col: u64,
}

impl<'a> Offsets<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            byte: 0,
            line: 1,
            col: 1,
        }
    }

    /// Byte offset of `loc` (the end of the text when it lies beyond).
    fn of(&mut self, loc: Location) -> usize {
        while (self.line, self.col) < (loc.line, loc.column) {
            let Some(c) = self.text[self.byte..].chars().next() else {
                break;
            };
            self.byte += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.col = 1;
            } else {
                self.col += 1;
            }
        }
        self.byte
    }
}

/// Cuts `text` at the `;`s that end statements. Whitespace and comments alone are no
/// statement.
///
/// # Errors
///
/// The text cannot be tokenized (an unterminated string, quoted name or comment), with
/// the line and column.
pub fn split(text: &str) -> Result<Split, String> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| e.to_string())?;
    let mut offsets = Offsets::new(text);
    let mut statements = Vec::new();
    let mut start: Option<usize> = None;
    for t in &tokens {
        match &t.token {
            Token::Whitespace(_) | Token::EOF => {}
            Token::SemiColon => {
                if let Some(s) = start.take() {
                    let end = offsets.of(t.span.start);
                    statements.push(text[s..end].trim().to_string());
                }
            }
            _ => {
                if start.is_none() {
                    start = Some(offsets.of(t.span.start));
                }
            }
        }
    }
    let rest = start
        .map(|s| text[s..].trim().to_string())
        .unwrap_or_default();
    Ok(Split { statements, rest })
}

/// Every statement of a script: those ended by `;` and a last one without it.
///
/// # Errors
///
/// As [`split`].
pub fn split_statements(text: &str) -> Result<Vec<String>, String> {
    let Split {
        mut statements,
        rest,
    } = split(text)?;
    if !rest.is_empty() {
        statements.push(rest);
    }
    Ok(statements)
}

/// Whether a tokenizer error only says the text stops inside a string, quoted name or
/// comment (the shell then reads another line).
fn unfinished(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("unterminated") || e.contains("unexpected eof")
}

/// Runs one statement and prints its result, with its row count and time on stderr
/// when `timing`. Ctrl-C cancels it (its tasks stop, its blocks go) and returns
/// `Ok(false)`.
pub(crate) async fn run_statement(
    target: &mut Target,
    sql: &str,
    format: Format,
    timing: bool,
) -> anyhow::Result<bool> {
    let started = Instant::now();
    let rows = match target {
        Target::Local(session) => {
            let df = session.sql(sql).await?;
            tokio::select! {
                printed = crate::cli::print_as_it_comes(&df, format) => printed?,
                _ = tokio::signal::ctrl_c() => {
                    let cancelled = session.cancel_all().await?;
                    eprintln!("interrupted: {cancelled} query cancelled");
                    return Ok(false);
                }
            }
        }
        Target::Remote { client, .. } => {
            tokio::select! {
                batches = client.sql(sql) => crate::cli::print_batches(batches?, format)?,
                _ = tokio::signal::ctrl_c() => {
                    // Dropping the call ends the server's operation.
                    eprintln!("interrupted: the query was cancelled");
                    return Ok(false);
                }
            }
        }
    };
    if timing {
        eprintln!(
            "{rows} row{} in {:.3} s",
            if rows == 1 { "" } else { "s" },
            started.elapsed().as_secs_f64()
        );
    }
    Ok(true)
}

/// Where the shell keeps its history.
fn history_file() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".ember_history"))
}

const HELP: &str = "\
Statements end with `;` and may span lines. Shell commands:
  \\q, quit, exit   leave the shell (or Ctrl-D)
  \\?, help         this text
Ctrl-C clears the line being typed, or cancels the running statement.
Catalog: SHOW TABLES; SHOW COLUMNS FROM t; DESCRIBE t; SELECT * FROM information_schema.tables;";

/// The interactive shell: reads statements with line editing and history until `\q` or
/// end of input, running each as it is completed.
pub(crate) async fn interactive(target: &mut Target, format: Format) -> anyhow::Result<()> {
    use rustyline::error::ReadlineError;
    let config = rustyline::Config::builder().auto_add_history(false).build();
    let mut editor =
        rustyline::DefaultEditor::with_config(config).context("starting the line editor")?;
    let history = history_file();
    if let Some(h) = &history {
        // A missing history file is the first run.
        let _ = editor.load_history(h);
    }
    let on = match &*target {
        Target::Local(session) => format!("{} executors", session.executors().len()),
        Target::Remote { url, .. } => url.clone(),
    };
    eprintln!(
        "Ember {} SQL shell on {on}; statements end with `;`, \\? for help, \\q to quit.",
        env!("CARGO_PKG_VERSION"),
    );
    if let Target::Local(session) = &*target {
        if let Some(url) = session.ui_url() {
            eprintln!("web UI at {url}");
        }
    }
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.trim().is_empty() {
            "ember> "
        } else {
            "    -> "
        };
        // The editor blocks on the terminal: read on a blocking thread.
        let (returned, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline(prompt);
            (editor, line)
        })
        .await
        .context("the line editor's thread panicked")?;
        editor = returned;
        let line = match line {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading a line"),
        };
        if buffer.trim().is_empty() {
            match line.trim().trim_end_matches(';') {
                "\\q" | "quit" | "exit" => break,
                "\\?" | "help" => {
                    eprintln!("{HELP}");
                    continue;
                }
                _ => {}
            }
        }
        if !buffer.is_empty() {
            buffer.push('\n');
        }
        buffer.push_str(&line);
        let split = match split(&buffer) {
            Ok(s) => s,
            Err(e) if unfinished(&e) => continue,
            Err(e) => {
                eprintln!("error: {e}");
                let _ = editor.add_history_entry(buffer.as_str());
                buffer.clear();
                continue;
            }
        };
        if split.statements.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(buffer.trim());
        for statement in &split.statements {
            match run_statement(target, statement, format, true).await {
                Ok(true) => {}
                // Interrupted: the rest of the line is not run.
                Ok(false) => break,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    break;
                }
            }
        }
        buffer = split.rest;
    }
    if let Some(h) = &history {
        if let Err(e) = editor.save_history(h) {
            tracing::debug!(error = %e, file = %h.display(), "history not saved");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semicolons_in_comments_strings_and_names_do_not_end_statements() {
        let sql = "-- TPC-H Q1 (Pricing Summary Report); the first line\n\
                   SELECT 'a;b' AS \"x;y\" /* ; */ FROM t WHERE s LIKE '%;%';\n\
                   select 'it''s; here';  -- trailing; comment\n\
                   SELECT 3";
        let statements = split_statements(sql).unwrap();
        assert_eq!(
            statements,
            vec![
                "SELECT 'a;b' AS \"x;y\" /* ; */ FROM t WHERE s LIKE '%;%'".to_string(),
                "select 'it''s; here'".to_string(),
                "SELECT 3".to_string(),
            ]
        );
    }

    #[test]
    fn only_comments_and_empty_statements_are_nothing() {
        assert!(split_statements("-- just a comment;\n ; ;; /* x; */")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn an_unfinished_string_asks_for_more_in_the_shell_and_fails_in_a_file() {
        let e = split("SELECT 'abc;").unwrap_err();
        assert!(unfinished(&e), "{e}");
        assert!(e.contains("Line: 1"), "says where: {e}");
        let s = split("SELECT 1; SELECT").unwrap();
        assert_eq!(s.statements, vec!["SELECT 1"]);
        assert_eq!(s.rest, "SELECT");
    }

    #[test]
    fn multibyte_text_before_a_statement_keeps_offsets_right() {
        let s = split_statements("SELECT 'é;ü' AS a; SELECT 'ß'").unwrap();
        assert_eq!(s, vec!["SELECT 'é;ü' AS a", "SELECT 'ß'"]);
    }

    #[test]
    fn a_long_script_is_cut_in_one_walk() {
        let script: String = (0..20_000)
            .map(|i| format!("SELECT {i} -- row; {i}\n;"))
            .collect();
        let statements = split_statements(&script).unwrap();
        assert_eq!(statements.len(), 20_000);
        assert_eq!(statements[19_999], "SELECT 19999 -- row; 19999");
    }
}
