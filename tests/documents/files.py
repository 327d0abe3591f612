"""Real files, made by the tests: multi-page PDFs with a text layer, Word documents with headings, and
hostile ones (encrypted, damaged, zip bombs)."""

import io
import zipfile

import docx
from fpdf import FPDF


def pdf(pages: list[str], *, password: str | None = None) -> bytes:
    document = FPDF()
    document.set_font("helvetica", size=11)
    for text in pages:
        document.add_page()
        document.multi_cell(0, 6, text)
    if password:
        document.set_encryption(owner_password=password, user_password=password)
    return bytes(document.output())


def pdf_without_text(pages: int = 2) -> bytes:
    document = FPDF()
    for _ in range(pages):
        document.add_page()
        document.rect(20, 20, 100, 60, style="F")  # a "scan": shapes, no text layer
    return bytes(document.output())


def word(blocks: list[tuple[str, str]]) -> bytes:
    """blocks: ("h1" | "h2" | "p", text)."""
    document = docx.Document()
    for kind, text in blocks:
        if kind.startswith("h"):
            document.add_heading(text, level=int(kind[1:]))
        else:
            document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def zip_bomb_as_docx(unpacked_mb: int = 30) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            block = b"\0" * (1024 * 1024)
            for _ in range(unpacked_mb):
                member.write(block)
    return buffer.getvalue()


def plain_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "hello")
    return buffer.getvalue()


LOREM = (
    "Crewdesk keeps every team's documents apart. Each paragraph here is filler that reads like prose, so the "
    "splitter has sentences and paragraphs to respect. "
)


def long_text(paragraphs: int, topic: str = "") -> str:
    return "\n\n".join(f"{topic}{LOREM * 4}" for _ in range(paragraphs))
