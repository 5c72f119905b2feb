//! Text encodings of imported files: detection from the first bytes, declared labels, and an
//! incremental decoder to UTF-8.
//!
//! Detection order: a byte order mark (UTF-8, UTF-16LE, UTF-16BE); then UTF-8 when the bytes
//! are valid UTF-8 (pure ASCII included); then UTF-16 without a BOM when the NUL bytes fall
//! on one side of every code unit; then `chardetng`'s guess, with an optional top-level
//! domain as a hint for CJK (`cn`, `tw`, `jp`...). GBK is read as GB18030 (its superset).
//!
//! A declared label (`gb18030`, `big5`, `shift_jis`, `utf-16le`...) overrides detection,
//! except that a byte order mark still wins when the file starts with one (as in the WHATWG
//! decode algorithm): a BOM is not a guess.

use super::ImportError;
use encoding_rs::{CoderResult, Decoder, Encoding};

/// How an encoding was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingSource {
    /// A byte order mark.
    Bom,
    /// Declared by the caller.
    Declared,
    /// The bytes are valid UTF-8.
    Utf8,
    /// NUL bytes on one side of each 16-bit unit: UTF-16 without a BOM.
    Utf16Heuristic,
    /// Guessed by `chardetng` from the byte statistics.
    Guessed,
    /// Decided at an earlier run and resumed from a checkpoint.
    Resumed,
}

/// The encoding a file is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectedEncoding {
    /// The encoding.
    pub encoding: &'static Encoding,
    /// Length of the byte order mark at the start of the file (0 when none); these bytes are
    /// not text.
    pub bom_len: usize,
    /// How it was found.
    pub source: EncodingSource,
}

impl DetectedEncoding {
    /// The encoding's canonical name (`UTF-8`, `UTF-16LE`, `gb18030`, `Big5`, `Shift_JIS`).
    pub fn name(&self) -> &'static str {
        self.encoding.name()
    }
}

/// Detects the encoding of a file from its first bytes (at best [`super::SNIFF_BYTES`] of
/// them; the cut may fall inside a character).
pub fn detect(first_bytes: &[u8]) -> DetectedEncoding {
    detect_with_hint(first_bytes, None)
}

/// [`detect`] with a top-level domain hint for `chardetng` (`cn`, `tw`, `hk`, `jp`, `kr`...),
/// which settles short CJK samples.
pub fn detect_with_hint(first_bytes: &[u8], tld: Option<&str>) -> DetectedEncoding {
    if let Some((encoding, bom_len)) = Encoding::for_bom(first_bytes) {
        return DetectedEncoding {
            encoding,
            bom_len,
            source: EncodingSource::Bom,
        };
    }
    // Before UTF-8: ASCII text in UTF-16 is valid UTF-8 too, NULs included.
    if let Some(encoding) = utf16_without_bom(first_bytes) {
        return DetectedEncoding {
            encoding,
            bom_len: 0,
            source: EncodingSource::Utf16Heuristic,
        };
    }
    if is_utf8_prefix(first_bytes) || mostly_utf8(first_bytes) {
        return DetectedEncoding {
            encoding: encoding_rs::UTF_8,
            bom_len: 0,
            source: EncodingSource::Utf8,
        };
    }
    let mut det = chardetng::EncodingDetector::new();
    // Not `last`: the sample may end inside a character.
    det.feed(first_bytes, false);
    let hint = tld.map(str::to_ascii_lowercase);
    let guess = det.guess(hint.as_deref().map(str::as_bytes), true);
    DetectedEncoding {
        encoding: superset(guess),
        bom_len: 0,
        source: EncodingSource::Guessed,
    }
}

/// The encoding a declared label names. Unknown labels and encodings that cannot be read
/// line by line (`replacement`, ISO-2022-JP) are errors naming the label.
pub fn resolve_label(label: &str) -> Result<&'static Encoding, ImportError> {
    let encoding = Encoding::for_label(label.trim().as_bytes()).ok_or_else(|| {
        ImportError::UnknownEncoding {
            label: label.to_owned(),
        }
    })?;
    if encoding == encoding_rs::REPLACEMENT || encoding == encoding_rs::ISO_2022_JP {
        return Err(ImportError::UnsupportedEncoding {
            name: encoding.name().to_owned(),
        });
    }
    Ok(superset(encoding))
}

/// The encoding used to decode: GBK as GB18030 (its superset), others as they are.
fn superset(encoding: &'static Encoding) -> &'static Encoding {
    if encoding == encoding_rs::GBK {
        encoding_rs::GB18030
    } else {
        encoding
    }
}

/// Whether the bytes are UTF-8, allowing a character cut at the end.
fn is_utf8_prefix(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        // `error_len() == None`: an incomplete sequence at the very end.
        Err(e) => e.error_len().is_none() && bytes.len() - e.valid_up_to() < 4,
    }
}

/// UTF-8 with a few lines in another encoding (a file edited in two programs): at least
/// twice as many lines with valid non-ASCII UTF-8 as lines with invalid sequences. The rows
/// holding the stray bytes are then flagged, rather than the whole file misread.
fn mostly_utf8(bytes: &[u8]) -> bool {
    let (mut valid_lines, mut invalid_lines) = (0usize, 0usize);
    for line in bytes.split(|b| *b == b'\n') {
        if line.is_ascii() {
            continue;
        }
        if std::str::from_utf8(line).is_ok() {
            valid_lines += 1;
        } else {
            invalid_lines += 1;
        }
    }
    invalid_lines > 0 && valid_lines >= 2 * invalid_lines
}

/// UTF-16 without a BOM: at least a quarter of the units have a zero byte, all on the same
/// side, and no unit is NUL.
fn utf16_without_bom(bytes: &[u8]) -> Option<&'static Encoding> {
    let units = bytes.len() / 2;
    if units < 2 {
        return None;
    }
    let (mut even, mut odd) = (0usize, 0usize);
    for pair in bytes.chunks_exact(2) {
        match (pair[0] == 0, pair[1] == 0) {
            (true, true) => return None,
            (true, false) => even += 1,
            (false, true) => odd += 1,
            (false, false) => {}
        }
    }
    if odd >= units / 4 && even == 0 && odd > 0 {
        Some(encoding_rs::UTF_16LE)
    } else if even >= units / 4 && odd == 0 && even > 0 {
        Some(encoding_rs::UTF_16BE)
    } else {
        None
    }
}

/// Why the first bytes of a file are not text, if they are not: a known binary format's
/// signature, NUL bytes (outside UTF-16), or many control characters.
pub fn binary_reason(first_bytes: &[u8], encoding: &'static Encoding) -> Option<String> {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (
            b"PK\x03\x04",
            "a ZIP archive (an XLSX or ODS file? import it as a spreadsheet)",
        ),
        (
            b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1",
            "an OLE document (an XLS file? import it as a spreadsheet)",
        ),
        (b"%PDF", "a PDF document"),
        (b"\x89PNG", "a PNG image"),
        (b"\xFF\xD8\xFF", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"\x1F\x8B", "a gzip archive"),
        (b"7z\xBC\xAF", "a 7-Zip archive"),
        (b"Rar!", "a RAR archive"),
        (b"\x7FELF", "an executable"),
        (b"MZ", "an executable"),
    ];
    for (magic, what) in SIGNATURES {
        if first_bytes.starts_with(magic) {
            return Some(format!("the file is {what}"));
        }
    }
    if encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE {
        let nul_units = first_bytes
            .chunks_exact(2)
            .filter(|p| p[0] == 0 && p[1] == 0)
            .count();
        return (nul_units > 0).then(|| "it contains NUL characters".to_owned());
    }
    if let Some(at) = first_bytes.iter().position(|b| *b == 0) {
        return Some(format!("it contains a NUL byte at offset {at}"));
    }
    let controls = first_bytes
        .iter()
        .filter(|b| **b < 0x20 && !matches!(**b, b'\t' | b'\n' | b'\r' | 0x0C | 0x1A))
        .count();
    if !first_bytes.is_empty() && controls * 20 > first_bytes.len() {
        return Some(format!(
            "{controls} of its first {} bytes are control characters",
            first_bytes.len()
        ));
    }
    None
}

/// An incremental decoder to UTF-8: chunks may be cut anywhere, even inside a character.
/// Malformed sequences become U+FFFD and are reported by the call that met them.
pub struct TextDecoder {
    decoder: Decoder,
    encoding: &'static Encoding,
}

impl std::fmt::Debug for TextDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextDecoder")
            .field("encoding", &self.encoding.name())
            .finish()
    }
}

impl TextDecoder {
    /// A decoder of `encoding` that takes the bytes as text from the first (a BOM, if any,
    /// must have been skipped by the caller: see [`DetectedEncoding::bom_len`]).
    pub fn new(encoding: &'static Encoding) -> Self {
        Self {
            decoder: encoding.new_decoder_without_bom_handling(),
            encoding,
        }
    }

    /// A decoder of `encoding` that drops a leading BOM of that encoding.
    pub fn with_bom_removal(encoding: &'static Encoding) -> Self {
        Self {
            decoder: encoding.new_decoder_with_bom_removal(),
            encoding,
        }
    }

    /// The encoding decoded.
    pub fn encoding(&self) -> &'static Encoding {
        self.encoding
    }

    /// Decodes a chunk, appending to `out`; returns whether bytes were replaced by U+FFFD.
    /// An incomplete character at the end is kept for the next chunk.
    pub fn decode(&mut self, chunk: &[u8], out: &mut String) -> bool {
        self.run(chunk, out, false)
    }

    /// Ends the text, appending what is left to `out` (U+FFFD for a cut character); returns
    /// whether bytes were replaced.
    pub fn finish(&mut self, out: &mut String) -> bool {
        self.run(&[], out, true)
    }

    fn run(&mut self, mut src: &[u8], out: &mut String, last: bool) -> bool {
        let mut replaced = false;
        loop {
            let need = self
                .decoder
                .max_utf8_buffer_length(src.len())
                .unwrap_or(src.len().saturating_mul(3).saturating_add(16));
            out.reserve(need.max(4));
            let (result, read, had) = self.decoder.decode_to_string(src, out, last);
            replaced |= had;
            src = &src[read..];
            match result {
                CoderResult::InputEmpty => return replaced,
                CoderResult::OutputFull => continue,
            }
        }
    }
}

/// Decodes a whole byte string (detection, then BOM skipped), for small inputs and tests.
pub fn decode_all(bytes: &[u8]) -> (String, DetectedEncoding, bool) {
    let det = detect(&bytes[..bytes.len().min(super::SNIFF_BYTES)]);
    let mut d = TextDecoder::new(det.encoding);
    let mut out = String::new();
    let mut replaced = d.decode(&bytes[det.bom_len..], &mut out);
    replaced |= d.finish(&mut out);
    (out, det, replaced)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ZH_SIMPLIFIED: &str = "姓名,公司,电话\n张伟,北京科技有限公司,13800000000\n王芳,上海贸易集团,13900000000\n李娜,广州电子商务有限公司,13700000000\n刘洋,深圳市创新科技股份有限公司,13600000000\n陈静,杭州网络信息技术有限公司,13500000000\n";
    const ZH_TRADITIONAL: &str = "姓名,公司,電話\n陳大文,台北科技股份有限公司,0912345678\n林美玲,高雄貿易集團,0923456789\n黃志明,台中電子商務有限公司,0934567890\n張淑芬,新竹創新科技股份有限公司,0945678901\n";
    const JA: &str = "氏名,会社,電話\n山田太郎,株式会社東京商事,090-1234-5678\n佐藤花子,大阪電機株式会社,080-2345-6789\n鈴木一郎,名古屋システム株式会社,070-3456-7890\n高橋美咲,福岡ソフトウェア株式会社,090-4567-8901\n";

    fn encode(text: &str, encoding: &'static Encoding) -> Vec<u8> {
        if encoding == encoding_rs::UTF_16LE {
            return text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        }
        if encoding == encoding_rs::UTF_16BE {
            return text.encode_utf16().flat_map(u16::to_be_bytes).collect();
        }
        let (bytes, used, unmappable) = encoding.encode(text);
        assert_eq!(used, encoding);
        assert!(!unmappable);
        bytes.into_owned()
    }

    fn with_bom(bom: &[u8], body: Vec<u8>) -> Vec<u8> {
        let mut v = bom.to_vec();
        v.extend(body);
        v
    }

    fn cases() -> Vec<(&'static str, Vec<u8>, &'static Encoding, &'static str)> {
        vec![
            (
                "utf-8",
                encode(ZH_SIMPLIFIED, encoding_rs::UTF_8),
                encoding_rs::UTF_8,
                ZH_SIMPLIFIED,
            ),
            (
                "utf-8 bom",
                with_bom(b"\xEF\xBB\xBF", encode(JA, encoding_rs::UTF_8)),
                encoding_rs::UTF_8,
                JA,
            ),
            (
                "utf-16le bom",
                with_bom(b"\xFF\xFE", encode(ZH_SIMPLIFIED, encoding_rs::UTF_16LE)),
                encoding_rs::UTF_16LE,
                ZH_SIMPLIFIED,
            ),
            (
                "utf-16be bom",
                with_bom(b"\xFE\xFF", encode(JA, encoding_rs::UTF_16BE)),
                encoding_rs::UTF_16BE,
                JA,
            ),
            (
                "gb18030",
                encode(ZH_SIMPLIFIED, encoding_rs::GB18030),
                encoding_rs::GB18030,
                ZH_SIMPLIFIED,
            ),
            (
                "big5",
                encode(ZH_TRADITIONAL, encoding_rs::BIG5),
                encoding_rs::BIG5,
                ZH_TRADITIONAL,
            ),
            (
                "shift_jis",
                encode(JA, encoding_rs::SHIFT_JIS),
                encoding_rs::SHIFT_JIS,
                JA,
            ),
        ]
    }

    fn decode_chunked(bytes: &[u8], chunk: usize) -> (String, DetectedEncoding, bool) {
        let det = detect(&bytes[..bytes.len().min(crate::import::SNIFF_BYTES)]);
        let mut d = TextDecoder::new(det.encoding);
        let mut out = String::new();
        let mut replaced = false;
        for c in bytes[det.bom_len..].chunks(chunk) {
            replaced |= d.decode(c, &mut out);
        }
        replaced |= d.finish(&mut out);
        (out, det, replaced)
    }

    #[test]
    fn each_encoding_round_trips_through_detect_and_decode() {
        for (name, bytes, encoding, text) in cases() {
            for chunk in [1, 2, 3, 7, 4096] {
                let (out, det, replaced) = decode_chunked(&bytes, chunk);
                assert_eq!(det.encoding, encoding, "{name}: detected {}", det.name());
                assert_eq!(out, text, "{name} in chunks of {chunk}");
                assert!(!replaced, "{name}");
            }
            assert!(binary_reason(&bytes, encoding).is_none(), "{name}");
        }
    }

    #[test]
    fn bom_sources_and_lengths() {
        let d = detect(b"\xEF\xBB\xBFa,b");
        assert_eq!(
            (d.encoding, d.bom_len, d.source),
            (encoding_rs::UTF_8, 3, EncodingSource::Bom)
        );
        let d = detect(b"\xFF\xFEa\0");
        assert_eq!((d.encoding, d.bom_len), (encoding_rs::UTF_16LE, 2));
        let d = detect(b"\xFE\xFF\0a");
        assert_eq!((d.encoding, d.bom_len), (encoding_rs::UTF_16BE, 2));
        let d = detect(b"plain,ascii\n");
        assert_eq!(
            (d.encoding, d.source),
            (encoding_rs::UTF_8, EncodingSource::Utf8)
        );
        let d = detect(b"");
        assert_eq!(d.encoding, encoding_rs::UTF_8);
    }

    #[test]
    fn utf8_cut_inside_a_character_is_still_utf8() {
        let bytes = "名前,会社".as_bytes();
        for cut in 1..bytes.len() {
            assert_eq!(
                detect(&bytes[..cut]).encoding,
                encoding_rs::UTF_8,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn utf16_without_bom_is_recognised() {
        let le = encode("name,email\nAnna,a@example.com\n", encoding_rs::UTF_16LE);
        assert_eq!(detect(&le).encoding, encoding_rs::UTF_16LE);
        let be = encode("name,email\nAnna,a@example.com\n", encoding_rs::UTF_16BE);
        assert_eq!(detect(&be).encoding, encoding_rs::UTF_16BE);
    }

    #[test]
    fn mostly_utf8_with_stray_bytes_is_utf8() {
        let mut bytes = "name,city\nJürgen,Köln\nZoë,Genève\nJosé,Málaga\n"
            .as_bytes()
            .to_vec();
        bytes.extend_from_slice(&encoding_rs::GB18030.encode("张伟,北京\n").0);
        assert_eq!(detect(&bytes).encoding, encoding_rs::UTF_8);
        // Mostly GB18030 is not.
        let mut bytes = encoding_rs::GB18030.encode(ZH_SIMPLIFIED).0.into_owned();
        bytes.extend_from_slice("Köln\n".as_bytes());
        assert_eq!(detect(&bytes).encoding, encoding_rs::GB18030);
    }

    #[test]
    fn labels_resolve_or_name_the_unknown() {
        for (label, enc) in [
            ("gb18030", encoding_rs::GB18030),
            ("GBK", encoding_rs::GB18030),
            ("big5", encoding_rs::BIG5),
            ("shift_jis", encoding_rs::SHIFT_JIS),
            ("Shift-JIS", encoding_rs::SHIFT_JIS),
            ("utf-16le", encoding_rs::UTF_16LE),
            ("UTF-16BE", encoding_rs::UTF_16BE),
            (" utf-8 ", encoding_rs::UTF_8),
        ] {
            assert_eq!(resolve_label(label), Ok(enc), "{label}");
        }
        let err = resolve_label("klingon-8").unwrap_err();
        assert_eq!(
            err,
            ImportError::UnknownEncoding {
                label: "klingon-8".into()
            }
        );
        assert!(err.to_string().contains("klingon-8"));
        assert!(matches!(
            resolve_label("iso-2022-kr"),
            Err(ImportError::UnsupportedEncoding { .. })
        ));
    }

    #[test]
    fn binary_files_are_named() {
        assert!(
            binary_reason(b"PK\x03\x04rest", encoding_rs::UTF_8).is_some_and(|r| r.contains("ZIP"))
        );
        assert!(binary_reason(b"abc\0def", encoding_rs::UTF_8).is_some_and(|r| r.contains("NUL")));
        let noise: Vec<u8> = (0u8..32).cycle().take(1000).map(|b| b | 1).collect();
        assert!(binary_reason(&noise, encoding_rs::UTF_8).is_some());
        assert!(binary_reason(b"a,b\r\nc,d\r\n", encoding_rs::UTF_8).is_none());
    }

    #[test]
    fn malformed_bytes_are_replaced_and_reported() {
        let mut d = TextDecoder::new(encoding_rs::UTF_8);
        let mut out = String::new();
        assert!(d.decode(b"ab\xFFcd", &mut out));
        assert!(!d.decode("é".as_bytes(), &mut out));
        assert!(!d.decode(b"\xE5", &mut out));
        assert!(d.finish(&mut out));
        assert_eq!(out, "ab\u{FFFD}cdé\u{FFFD}");
        let (text, det, replaced) = decode_all(b"\xEF\xBB\xBFok");
        assert_eq!((text.as_str(), det.bom_len, replaced), ("ok", 3, false));
    }

    proptest! {
        #[test]
        fn any_chunking_decodes_the_same(cuts in proptest::collection::vec(1usize..40, 1..50)) {
            for (name, bytes, _, text) in cases() {
                let det = detect(&bytes);
                let mut d = TextDecoder::new(det.encoding);
                let mut out = String::new();
                let mut rest = &bytes[det.bom_len..];
                let mut i = 0;
                while !rest.is_empty() {
                    let n = cuts[i % cuts.len()].min(rest.len());
                    d.decode(&rest[..n], &mut out);
                    rest = &rest[n..];
                    i += 1;
                }
                d.finish(&mut out);
                prop_assert_eq!(out.as_str(), text, "{}", name);
            }
        }
    }
}
