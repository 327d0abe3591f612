"""Real files, made by the tests: multi-page PDFs with a text layer, Word documents with headings, and
hostile ones (encrypted, damaged, zip bombs)."""

import io
import os
import struct
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


PARAGRAPH = (
    '<w:p><w:r><w:t xml:space="preserve">Crewdesk keeps every team\'s documents apart. Each paragraph here is '
    "filler that reads like prose, so the splitter has sentences.</w:t></w:r></w:p>"
)


def word_with_xml(xml_bytes: int, *, padding: int = 0) -> bytes:
    """A real Word document whose word/document.xml is inflated with paragraphs to about `xml_bytes`, and
    `padding` bytes of random (incompressible) media, which brings the compression ratio down as far as a
    sender likes: the audit's 190 MB of XML passed a ratio check this way."""
    template = zipfile.ZipFile(io.BytesIO(word([("h1", "Inflated"), ("p", "First.")])))
    xml = template.read("word/document.xml").decode()
    xml = xml.replace("<w:body>", "<w:body>" + PARAGRAPH * max(0, xml_bytes // len(PARAGRAPH)), 1)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for info in template.infolist():
            content = xml.encode() if info.filename == "word/document.xml" else template.read(info.filename)
            archive.writestr(info.filename, content)
        if padding:
            archive.writestr("word/media/noise.bin", os.urandom(padding), compress_type=zipfile.ZIP_STORED)
    return buffer.getvalue()


def lying_sizes(data: bytes, member: str, declared: int) -> bytes:
    """The same zip with `member`'s uncompressed size rewritten to `declared` in its local header and in the
    central directory: what a zip bomb does to pass a check that trusts the directory."""
    patched = bytearray(data)
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = archive.getinfo(member)
    name = member.encode()
    local = info.header_offset
    assert patched[local : local + 4] == b"PK\x03\x04"
    struct.pack_into("<I", patched, local + 22, declared)
    position = 0
    while (position := patched.find(b"PK\x01\x02", position)) >= 0:
        name_length = struct.unpack_from("<H", patched, position + 28)[0]
        if bytes(patched[position + 46 : position + 46 + name_length]) == name:
            struct.pack_into("<I", patched, position + 24, declared)
            return bytes(patched)
        position += 4
    raise AssertionError(f"{member} not in the central directory")
