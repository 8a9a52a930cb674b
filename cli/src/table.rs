//! Aligned text tables for people: a header row and rows of cells, columns padded to their
//! widest cell, two spaces apart, no trailing spaces.

/// A table: headers and rows of cells (a row shorter than the headers is padded with empty
/// cells).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row after the header line, each line ending in `\n`.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut rendered = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = line.get(i).map_or("", String::as_str);
                if i > 0 {
                    rendered.push_str("  ");
                }
                rendered.push_str(cell);
                let pad = width - cell.chars().count();
                rendered.extend(std::iter::repeat_n(' ', pad));
            }
            text.push_str(rendered.trim_end());
            text.push('\n');
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let mut t = Table::new(["ID", "ADDRESS", "LABELS"]);
        t.row(["n1", "127.0.0.1:4000", "zone=a"]);
        t.row(["node-two", "127.0.0.1:4001", ""]);
        assert_eq!(
            t.render(),
            "ID        ADDRESS         LABELS\n\
             n1        127.0.0.1:4000  zone=a\n\
             node-two  127.0.0.1:4001\n"
        );
    }

    #[test]
    fn widths_count_characters_not_bytes_and_short_rows_are_padded() {
        let mut t = Table::new(["A", "B", "C"]);
        t.row(["é", "x"]);
        t.row(["ab", "y", "z"]);
        assert_eq!(t.render(), "A   B  C\né   x\nab  y  z\n");
    }

    #[test]
    fn a_table_without_rows_is_its_header() {
        let t = Table::new(["NAME", "NODE"]);
        assert!(t.is_empty());
        assert_eq!(t.render(), "NAME  NODE\n");
        assert_eq!(Table::default().render(), "\n");
    }

    #[test]
    fn a_row_longer_than_the_header_gets_its_column() {
        let mut t = Table::new(["A"]);
        t.row(["1", "extra"]);
        assert_eq!(t.render(), "A\n1  extra\n");
    }
}
