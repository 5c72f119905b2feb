//! Spreadsheet imports (XLSX, XLS, XLSB, ODS) read with calamine into the same [`RawRow`]s
//! as CSV.
//!
//! A spreadsheet is a zip archive (or an OLE file) whose parts reference each other, so it
//! cannot be read as a stream of bytes: the whole file is held in memory, at most
//! [`MAX_SHEET_FILE_BYTES`] (256 MiB). Of an XLSX file, calamine also holds the shared
//! strings table and the styles; the sheet's cells are then streamed from its XML, row by
//! row, so the rows are not all in memory at once. XLS, XLSB and ODS sheets are loaded as one
//! grid of cells.
//!
//! Cells become text: integers without a spurious `.0`, other numbers in their shortest
//! form, dates as ISO 8601 (`2024-03-01`, or `2024-03-01T09:30:00` with a time), booleans as
//! `true`/`false`, formulas as their cached value, and error values (`#DIV/0!`) as empty
//! cells with a [`RowProblem::CellError`]. The header is the first row with a non-empty cell;
//! blank rows are skipped but counted in [`RawRow::number`].

use super::csv::column_names;
use super::{ImportError, MAX_CELL_BYTES, MAX_COLUMNS, MAX_SHEET_FILE_BYTES, RawRow, RowProblem};
use calamine::{Data, DataRef, ExcelDateTime, Range, Reader, Sheets, XlsxCellReader};
use std::io::Cursor;

type Source<'a> = Cursor<&'a [u8]>;

/// A sheet of a workbook, read from the file's bytes.
pub struct XlsxSheet<'a> {
    workbook: Sheets<Source<'a>>,
    name: String,
    sheet_names: Vec<String>,
}

impl std::fmt::Debug for XlsxSheet<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XlsxSheet")
            .field("name", &self.name)
            .field("sheet_names", &self.sheet_names)
            .finish()
    }
}

impl<'a> XlsxSheet<'a> {
    /// Opens a workbook (XLSX, XLS, XLSB or ODS, told by its content) and picks the named
    /// sheet, or the first when `sheet` is `None`.
    pub fn open(bytes: &'a [u8], sheet: Option<&str>) -> Result<Self, ImportError> {
        if bytes.len() > MAX_SHEET_FILE_BYTES {
            return Err(ImportError::FileTooLarge {
                size: bytes.len(),
                max: MAX_SHEET_FILE_BYTES,
            });
        }
        if bytes.is_empty() {
            return Err(ImportError::EmptyFile);
        }
        let workbook = calamine::open_workbook_auto_from_rs(Cursor::new(bytes)).map_err(|e| {
            ImportError::Spreadsheet {
                message: e.to_string(),
            }
        })?;
        let sheet_names = workbook.sheet_names();
        let name = match sheet {
            Some(wanted) => sheet_names
                .iter()
                .find(|n| n.as_str() == wanted)
                .or_else(|| sheet_names.iter().find(|n| n.eq_ignore_ascii_case(wanted)))
                .cloned()
                .ok_or_else(|| ImportError::SheetNotFound {
                    name: wanted.to_owned(),
                    available: sheet_names.clone(),
                })?,
            None => sheet_names.first().cloned().ok_or(ImportError::NoSheet)?,
        };
        Ok(Self {
            workbook,
            name,
            sheet_names,
        })
    }

    /// The sheet read.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The workbook's sheets, in order.
    pub fn sheet_names(&self) -> &[String] {
        &self.sheet_names
    }

    /// Reads the header row and returns the data rows as an iterator. A sheet without a
    /// non-empty cell is [`ImportError::EmptyFile`].
    pub fn rows(&mut self) -> Result<SheetRows<'_, 'a>, ImportError> {
        let spreadsheet = |e: String| ImportError::Spreadsheet { message: e };
        let cells = match &mut self.workbook {
            Sheets::Xlsx(x) => Cells::Stream {
                reader: Box::new(
                    x.worksheet_cells_reader(&self.name)
                        .map_err(|e| spreadsheet(e.to_string()))?,
                ),
                pending: None,
                done: false,
            },
            other => {
                let range = other
                    .worksheet_range(&self.name)
                    .map_err(|e| spreadsheet(e.to_string()))?;
                Cells::Grid { range, next: 0 }
            }
        };
        let mut rows = SheetRows {
            cells,
            header: Vec::new(),
            raw_header: Vec::new(),
            header_row: 0,
        };
        let (header_row, cells) = loop {
            match rows.next_sheet_row()? {
                None => return Err(ImportError::EmptyFile),
                Some((row, cells)) if cells.iter().any(|c| !c.text.is_empty()) => {
                    break (row, cells);
                }
                Some(_) => {}
            }
        };
        let width = cells.last().map_or(0, |c| c.column + 1);
        if width > MAX_COLUMNS {
            return Err(ImportError::TooManyColumns {
                count: width,
                max: MAX_COLUMNS,
            });
        }
        let mut raw = vec![String::new(); width];
        for c in cells {
            raw[c.column] = c.text;
        }
        rows.header = column_names(&raw);
        rows.raw_header = raw;
        rows.header_row = header_row;
        Ok(rows)
    }
}

/// One cell made text.
#[derive(Debug)]
struct CellText {
    column: usize,
    text: String,
    error: Option<String>,
}

enum Cells<'s, 'a> {
    Stream {
        reader: Box<XlsxCellReader<'s, Source<'a>>>,
        pending: Option<(u32, CellText)>,
        done: bool,
    },
    Grid {
        range: Range<Data>,
        next: usize,
    },
}

/// The data rows of a sheet, after its header; see [`XlsxSheet::rows`].
pub struct SheetRows<'s, 'a> {
    cells: Cells<'s, 'a>,
    header: Vec<String>,
    raw_header: Vec<String>,
    header_row: u32,
}

impl std::fmt::Debug for SheetRows<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SheetRows")
            .field("header", &self.header)
            .field("header_row", &self.header_row)
            .finish()
    }
}

impl SheetRows<'_, '_> {
    /// Column names: trimmed, empty ones named `column_<position>`, duplicates suffixed.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The header cells as they are in the sheet.
    pub fn raw_header(&self) -> &[String] {
        &self.raw_header
    }

    /// The 0-based sheet row of the header (row 1 in the spreadsheet is 0).
    pub fn header_row(&self) -> u32 {
        self.header_row
    }

    /// The next sheet row that has cells: its 0-based index and its cells, by column.
    fn next_sheet_row(&mut self) -> Result<Option<(u32, Vec<CellText>)>, ImportError> {
        match &mut self.cells {
            Cells::Stream {
                reader,
                pending,
                done,
            } => {
                let mut row: Option<(u32, Vec<CellText>)> =
                    pending.take().map(|(r, c)| (r, vec![c]));
                while !*done {
                    let cell = reader.next_cell().map_err(|e| ImportError::Spreadsheet {
                        message: e.to_string(),
                    })?;
                    let Some(cell) = cell else {
                        *done = true;
                        break;
                    };
                    let (r, c) = cell.get_position();
                    let text = cell_ref_text(c as usize, cell.get_value());
                    match &mut row {
                        Some((current, cells)) if *current == r => cells.push(text),
                        Some(_) => {
                            *pending = Some((r, text));
                            break;
                        }
                        None => row = Some((r, vec![text])),
                    }
                }
                Ok(row.map(|(r, mut cells)| {
                    cells.sort_by_key(|c| c.column);
                    (r, cells)
                }))
            }
            Cells::Grid { range, next } => {
                let Some((start_row, start_col)) = range.start() else {
                    return Ok(None);
                };
                if *next >= range.height() {
                    return Ok(None);
                }
                let r = start_row.saturating_add(u32::try_from(*next).unwrap_or(u32::MAX));
                let cells = (0..range.width())
                    .filter_map(|i| {
                        let v = range.get((*next, i))?;
                        Some(cell_text(start_col as usize + i, v))
                    })
                    .collect();
                *next += 1;
                Ok(Some((r, cells)))
            }
        }
    }

    fn next_row(&mut self) -> Result<Option<RawRow>, ImportError> {
        loop {
            let Some((r, cells)) = self.next_sheet_row()? else {
                return Ok(None);
            };
            if cells.iter().all(|c| c.text.is_empty() && c.error.is_none()) {
                continue;
            }
            let mut problems = Vec::new();
            let last = cells
                .iter()
                .filter(|c| !c.text.is_empty() || c.error.is_some())
                .map(|c| c.column + 1)
                .max()
                .unwrap_or(0);
            let width = self.header.len().max(last);
            if last > self.header.len() {
                problems.push(RowProblem::TooManyFields {
                    expected: self.header.len(),
                    found: last,
                });
            }
            let mut fields = vec![String::new(); width.min(MAX_COLUMNS)];
            for c in cells {
                if let Some(error) = c.error {
                    problems.push(RowProblem::CellError {
                        column: c.column,
                        error,
                    });
                }
                if c.text.len() > MAX_CELL_BYTES {
                    problems.push(RowProblem::CellTooLarge {
                        column: c.column,
                        bytes: c.text.len(),
                        max: MAX_CELL_BYTES,
                    });
                }
                if let Some(f) = fields.get_mut(c.column) {
                    *f = c.text;
                }
            }
            return Ok(Some(RawRow {
                number: u64::from(r.saturating_sub(self.header_row)),
                byte_offset: 0,
                fields,
                problems,
            }));
        }
    }
}

impl Iterator for SheetRows<'_, '_> {
    type Item = Result<RawRow, ImportError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_row().transpose()
    }
}

fn cell_text(column: usize, value: &Data) -> CellText {
    let text = |t: String| CellText {
        column,
        text: t,
        error: None,
    };
    match value {
        Data::Int(i) => text(i.to_string()),
        Data::Float(f) => text(number_text(*f)),
        Data::String(s) => text(s.clone()),
        Data::Bool(b) => text(b.to_string()),
        Data::DateTime(d) => text(date_text(d)),
        Data::DateTimeIso(s) | Data::DurationIso(s) => text(s.clone()),
        Data::Error(e) => CellText {
            column,
            text: String::new(),
            error: Some(e.to_string()),
        },
        Data::Empty => text(String::new()),
    }
}

fn cell_ref_text(column: usize, value: &DataRef<'_>) -> CellText {
    match value {
        DataRef::SharedString(s) => CellText {
            column,
            text: (*s).to_owned(),
            error: None,
        },
        DataRef::Int(i) => cell_text(column, &Data::Int(*i)),
        DataRef::Float(f) => cell_text(column, &Data::Float(*f)),
        DataRef::String(s) => cell_text(column, &Data::String(s.clone())),
        DataRef::Bool(b) => cell_text(column, &Data::Bool(*b)),
        DataRef::DateTime(d) => cell_text(column, &Data::DateTime(*d)),
        DataRef::DateTimeIso(s) => cell_text(column, &Data::DateTimeIso(s.clone())),
        DataRef::DurationIso(s) => cell_text(column, &Data::DurationIso(s.clone())),
        DataRef::Error(e) => cell_text(column, &Data::Error(e.clone())),
        DataRef::Empty => cell_text(column, &Data::Empty),
    }
}

/// A number as text: integers without `.0`, others in their shortest form.
fn number_text(f: f64) -> String {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// A date cell as ISO 8601: the date alone at midnight, else date and time; a duration as
/// an ISO 8601 duration.
fn date_text(d: &ExcelDateTime) -> String {
    if d.is_duration() {
        let secs = (d.as_f64() * 86_400.0).round() as i64;
        return format!("PT{}H{}M{}S", secs / 3600, secs % 3600 / 60, secs % 60);
    }
    let (y, mo, da, h, mi, s, _ms) = d.to_ymd_hms_milli();
    if (h, mi, s) == (0, 0, 0) {
        format!("{y:04}-{mo:02}-{da:02}")
    } else {
        format!("{y:04}-{mo:02}-{da:02}T{h:02}:{mi:02}:{s:02}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Builds an XLSX file: `cells` is the sheet XML's `<sheetData>` content.
    pub(crate) fn xlsx(sheets: &[(&str, &str)], shared: &[&str]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        let mut put = |name: &str, body: &str| {
            zip.start_file(name, opts).unwrap();
            zip.write_all(body.as_bytes()).unwrap();
        };
        let overrides: String = (1..=sheets.len())
            .map(|i| format!(r#"<Override PartName="/xl/worksheets/sheet{i}.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>"#))
            .collect();
        put(
            "[Content_Types].xml",
            &format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>{overrides}<Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/><Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/></Types>"#
            ),
        );
        put(
            "_rels/.rels",
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#,
        );
        let sheet_list: String = sheets
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                format!(
                    r#"<sheet name="{name}" sheetId="{}" r:id="rId{}"/>"#,
                    i + 1,
                    i + 1
                )
            })
            .collect();
        put(
            "xl/workbook.xml",
            &format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>{sheet_list}</sheets></workbook>"#
            ),
        );
        let n = sheets.len();
        let rels: String = (1..=n)
            .map(|i| format!(r#"<Relationship Id="rId{i}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet{i}.xml"/>"#))
            .collect();
        put(
            "xl/_rels/workbook.xml.rels",
            &format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">{rels}<Relationship Id="rId{}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/><Relationship Id="rId{}" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>"#,
                n + 1,
                n + 2
            ),
        );
        let sst: String = shared
            .iter()
            .map(|s| format!("<si><t>{s}</t></si>"))
            .collect();
        put(
            "xl/sharedStrings.xml",
            &format!(
                r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="{0}" uniqueCount="{0}">{sst}</sst>"#,
                shared.len()
            ),
        );
        // Style 0: general; style 1: a date (built-in format 14); style 2: date and time (22).
        put(
            "xl/styles.xml",
            r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts><fills count="1"><fill><patternFill patternType="none"/></fill></fills><borders count="1"><border/></borders><cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs><cellXfs count="3"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/><xf numFmtId="14" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/><xf numFmtId="22" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/></cellXfs></styleSheet>"#,
        );
        for (i, (_, cells)) in sheets.iter().enumerate() {
            put(
                &format!("xl/worksheets/sheet{}.xml", i + 1),
                &format!(
                    r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{cells}</sheetData></worksheet>"#
                ),
            );
        }
        zip.finish().unwrap().into_inner()
    }

    /// Leads with a formula, a date, a date-time, an integer stored as a float, a boolean,
    /// an error, an inline string and a blank row.
    pub(crate) fn leads_xlsx() -> Vec<u8> {
        let rows = concat!(
            r#"<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="s"><v>2</v></c><c r="D1" t="s"><v>3</v></c><c r="E1" t="s"><v>4</v></c><c r="F1" t="s"><v>5</v></c></row>"#,
            r#"<row r="2"><c r="A2" t="s"><v>6</v></c><c r="B2" t="s"><v>7</v></c><c r="C2"><v>13800000000</v></c><c r="D2" s="1"><v>45352</v></c><c r="E2"><f>SUM(2,3)</f><v>5</v></c><c r="F2" t="b"><v>1</v></c></row>"#,
            r#"<row r="4"><c r="A4" t="inlineStr"><is><t>Bob</t></is></c><c r="B4" t="str"><f>"=ACME"&amp;"X"</f><v>=ACMEX</v></c><c r="C4"><v>2.5</v></c><c r="D4" s="2"><v>45352.5</v></c><c r="E4" t="e"><f>1/0</f><v>#DIV/0!</v></c><c r="G4"><v>7</v></c></row>"#,
        );
        xlsx(
            &[
                ("Leads", rows),
                (
                    "Other",
                    r#"<row r="1"><c r="A1" t="inlineStr"><is><t>x</t></is></c></row>"#,
                ),
            ],
            &[
                "姓名",
                "公司",
                "手机",
                "Birth Date",
                "Score",
                "Active",
                "张伟",
                "北京科技",
            ],
        )
    }

    #[test]
    fn xlsx_cells_become_text() {
        let bytes = leads_xlsx();
        let mut sheet = XlsxSheet::open(&bytes, None).unwrap();
        assert_eq!(sheet.name(), "Leads");
        assert_eq!(sheet.sheet_names(), ["Leads", "Other"]);
        let mut rows = sheet.rows().unwrap();
        assert_eq!(
            rows.header(),
            ["姓名", "公司", "手机", "Birth Date", "Score", "Active"]
        );
        let rows: Vec<RawRow> = rows.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].number, 1);
        assert_eq!(
            rows[0].fields,
            ["张伟", "北京科技", "13800000000", "2024-03-01", "5", "true"]
        );
        assert!(rows[0].problems.is_empty());
        // Row 4 of the sheet: the blank row 3 is skipped but counted.
        assert_eq!(rows[1].number, 3);
        assert_eq!(
            rows[1].fields,
            ["Bob", "=ACMEX", "2.5", "2024-03-01T12:00:00", "", "", "7"]
        );
        assert_eq!(
            rows[1].problems,
            [
                RowProblem::TooManyFields {
                    expected: 6,
                    found: 7
                },
                RowProblem::CellError {
                    column: 4,
                    error: "#DIV/0!".into()
                }
            ]
        );
    }

    #[test]
    fn named_sheets_and_bad_files() {
        let bytes = leads_xlsx();
        let mut sheet = XlsxSheet::open(&bytes, Some("other")).unwrap();
        assert_eq!(sheet.name(), "Other");
        let rows = sheet.rows().unwrap();
        assert_eq!(rows.header(), ["x"]);
        assert_eq!(rows.count(), 0);
        let err = XlsxSheet::open(&bytes, Some("Missing")).unwrap_err();
        assert_eq!(err.field_path(), "sheet");
        assert!(err.to_string().contains("Missing") && err.to_string().contains("Leads"));
        assert!(matches!(
            XlsxSheet::open(b"not a workbook at all", None),
            Err(ImportError::Spreadsheet { .. })
        ));
        assert_eq!(
            XlsxSheet::open(b"", None).unwrap_err(),
            ImportError::EmptyFile
        );
        let empty = xlsx(&[("Empty", "")], &[]);
        let mut sheet = XlsxSheet::open(&empty, None).unwrap();
        assert_eq!(sheet.rows().unwrap_err(), ImportError::EmptyFile);
    }

    /// An ODS file (read as a grid, not streamed) with a formula, a date and a blank row.
    #[test]
    fn ods_reads_through_the_grid() {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let mut put = |name: &str, body: &str| {
            zip.start_file(name, stored).unwrap();
            zip.write_all(body.as_bytes()).unwrap();
        };
        put("mimetype", "application/vnd.oasis.opendocument.spreadsheet");
        put(
            "META-INF/manifest.xml",
            r#"<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2"><manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/><manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>"#,
        );
        let cell = |t: &str| {
            format!(
                r#"<table:table-cell office:value-type="string"><text:p>{t}</text:p></table:table-cell>"#
            )
        };
        let content = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2"><office:body><office:spreadsheet><table:table table:name="Kontakte"><table:table-row>{}{}{}</table:table-row><table:table-row>{}<table:table-cell office:value-type="float" office:value="42" table:formula="of:=40+2"><text:p>42</text:p></table:table-cell><table:table-cell office:value-type="date" office:date-value="1990-03-05"><text:p>05.03.1990</text:p></table:table-cell></table:table-row><table:table-row><table:table-cell table:number-columns-repeated="3"/></table:table-row><table:table-row>{}<table:table-cell office:value-type="float" office:value="2.5"><text:p>2,5</text:p></table:table-cell></table:table-row></table:table></office:spreadsheet></office:body></office:document-content>"#,
            cell("Name"),
            cell("Punkte"),
            cell("Geburtsdatum"),
            cell("Jürgen"),
            cell("Zoë")
        );
        put("content.xml", &content);
        let bytes = zip.finish().unwrap().into_inner();
        let mut sheet = XlsxSheet::open(&bytes, None).unwrap();
        assert_eq!(sheet.name(), "Kontakte");
        let mut rows = sheet.rows().unwrap();
        assert_eq!(rows.header(), ["Name", "Punkte", "Geburtsdatum"]);
        let rows: Vec<RawRow> = rows.by_ref().collect::<Result<_, _>>().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].fields, ["Jürgen", "42", "1990-03-05"]);
        assert_eq!(
            (rows[1].number, rows[1].fields.clone()),
            (3, vec!["Zoë".to_owned(), "2.5".to_owned(), String::new()])
        );
    }

    #[test]
    fn number_and_date_text() {
        assert_eq!(number_text(42.0), "42");
        assert_eq!(number_text(-3.0), "-3");
        assert_eq!(number_text(0.1), "0.1");
        assert_eq!(number_text(1e20), "100000000000000000000");
        assert_eq!(number_text(f64::NAN), "NaN");
    }
}
