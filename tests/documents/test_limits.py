"""What a document may unpack to: limits by absolute size that fit a worker's memory, checked before anything
parses the file, and a measurement that ingestion stays inside them."""

import io
import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from documents import extraction, ingestion, services
from documents.extraction import ExtractionRefused, detect_kind, extract_sections, max_unpacked_bytes
from documents.models import Chunk, Document
from tests.documents import files

MiB = 1024 * 1024


@pytest.fixture
def no_parsing(monkeypatch):
    """The files python-docx was asked to open (making a new document, as the tests do, opens none)."""
    import docx

    parsed, real = [], docx.Document

    def recording(*args, **kwargs):
        if args and args[0] is not None:
            parsed.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(docx, "Document", recording)
    return parsed


def test_the_limits_follow_the_memory_one_extraction_may_take(settings):
    assert max_unpacked_bytes() == 512 * MiB // 20  # the default: 25.6 MiB of XML, about 512 MiB to parse
    settings.DOCUMENTS_EXTRACTION_MEMORY_BYTES = 100 * MiB
    assert max_unpacked_bytes() == 5 * MiB and extraction.max_html_bytes() == 100 * MiB // 45
    settings.DOCUMENTS_MAX_UNPACKED_BYTES = 1 * MiB  # the older, absolute setting still caps it
    assert max_unpacked_bytes() == 1 * MiB


def test_xml_that_unpacks_past_the_limit_is_refused_before_it_is_parsed(no_parsing):
    # 30 MiB of real Word XML and 400 KB of noise: 75 times its weight, under the ratio check (100x) and
    # under the former absolute limit (200 MiB). Before, it was parsed, with some 600 MiB of memory.
    data = files.word_with_xml(30 * MiB, padding=400_000)
    assert 30 * MiB < 100 * len(data)
    for refusing in (lambda: detect_kind(data), lambda: extract_sections(Document.Kind.DOCX, data)):
        with pytest.raises(ExtractionRefused) as refused:
            refusing()
        assert (refused.value.status, refused.value.code) == (413, "archive_too_large")
        assert "word/document.xml" in refused.value.message and "the limit is 25.6 MiB" in refused.value.message
    assert no_parsing == []


def test_many_members_each_under_the_limit_are_refused_in_total(settings, no_parsing):
    settings.DOCUMENTS_EXTRACTION_MEMORY_BYTES = 40 * MiB  # 2 MiB unpacked
    data = files.word_with_xml(1500 * 1024, padding=1 * MiB)
    with pytest.raises(ExtractionRefused) as refused:
        detect_kind(data)
    assert refused.value.code == "archive_too_large" and "would take" in refused.value.message
    assert "the limit is 2.0 MiB" in refused.value.message


def test_a_zip_whose_directory_lies_about_sizes_is_refused_unparsed(settings, no_parsing):
    data = files.word_with_xml(8 * MiB)
    liar = files.lying_sizes(data, "word/document.xml", 1000)  # 8 MiB of XML that says 1,000 bytes
    assert detect_kind(liar) == Document.Kind.DOCX  # the directory alone looks harmless
    with pytest.raises(ExtractionRefused) as refused:
        extract_sections(Document.Kind.DOCX, liar)
    assert refused.value.code == "corrupt_file" and "damaged" in refused.value.message
    assert no_parsing == []


def test_what_unpacks_is_counted_whatever_the_directory_says(settings, monkeypatch, no_parsing):
    # Without the directory's word (as if it had passed), the count while unpacking stops at the limit.
    monkeypatch.setattr(extraction, "_check_docx_archive", lambda data: zipfile.ZipFile(io.BytesIO(data)))
    data = files.word_with_xml(3 * MiB)
    settings.DOCUMENTS_EXTRACTION_MEMORY_BYTES = 20 * MiB  # 1 MiB
    with pytest.raises(ExtractionRefused) as refused:
        extract_sections(Document.Kind.DOCX, data)
    assert refused.value.code == "archive_too_large" and "unpacks to more than" in refused.value.message


def test_html_over_what_its_parser_can_hold_is_refused(settings):
    settings.DOCUMENTS_EXTRACTION_MEMORY_BYTES = 45 * MiB  # 1 MiB of HTML
    page = b"<html><body>" + b"<p>Paragraph of a long page.</p>" * (MiB // 30) + b"</body></html>"
    with pytest.raises(ExtractionRefused) as refused:
        extract_sections(Document.Kind.HTML, page)
    assert (refused.value.status, refused.value.code) == (413, "file_too_large")
    assert extract_sections(Document.Kind.HTML, page[:100_000] + b"</p></body></html>")[0]


def test_a_pdf_stream_that_unpacks_past_the_limit_is_refused(settings):
    settings.DOCUMENTS_EXTRACTION_MEMORY_BYTES = 20 * 1024  # 1 KiB per stream
    data = files.pdf([files.long_text(3)])  # one page, its content stream 2.5 KB unpacked
    with pytest.raises(ExtractionRefused) as refused:
        extract_sections(Document.Kind.PDF, data)
    assert (refused.value.status, refused.value.code) == (413, "archive_too_large")
    assert "more than 1 KiB" in refused.value.message
    settings.DOCUMENTS_EXTRACTION_MEMORY_BYTES = 512 * MiB
    assert extract_sections(Document.Kind.PDF, data)[1] == 1


@pytest.mark.django_db
def test_ingestion_fails_the_document_with_the_reason_and_does_not_retry(settings, no_parsing):
    from tests.accounts.factories import OrganizationFactory

    org = OrganizationFactory()
    document = services.document_upload(org=org, data=files.word_with_xml(3 * MiB), filename="big.docx")
    settings.DOCUMENTS_EXTRACTION_MEMORY_BYTES = 40 * MiB  # lowered after the upload: 2 MiB
    ingestion.document_ingest(org_id=org.pk, document_id=document.pk)
    document.refresh_from_db()
    assert document.status == Document.Status.FAILED and document.attempts == 1
    assert "has a part (word/document.xml) of 3.0 MiB when unpacked; the limit is 2.0 MiB" in document.failure_reason
    assert not Chunk.objects.for_org(org).filter(document=document).exists()
    ingestion.document_ingest(org_id=org.pk, document_id=document.pk)  # a redelivery does nothing
    document.refresh_from_db()
    assert document.attempts == 1


def test_ingesting_a_document_near_the_limit_stays_within_the_memory_it_was_given(tmp_path):
    """In a fresh process: the peak resident memory of extracting and chunking a Word document just under the
    limit, above the process's memory before, stays under the memory the limit was derived from."""
    budget = 40 * MiB  # a limit of 2 MiB of XML (the default, 25.6 MiB, takes many minutes to chunk here)
    path = tmp_path / "near.docx"
    template = sum(m.file_size for m in zipfile.ZipFile(io.BytesIO(files.word_with_xml(0))).infolist())
    path.write_bytes(files.word_with_xml(int(budget / 20 * 0.95) - template))  # 95% of the limit, in total
    script = textwrap.dedent(f"""
        import json, os, django
        os.environ["DJANGO_SETTINGS_MODULE"] = "saas.settings.test"
        django.setup()
        from django.conf import settings
        from documents import extraction
        settings.DOCUMENTS_EXTRACTION_MEMORY_BYTES = {budget}
        data = open({str(path)!r}, "rb").read()
        extraction.chunk_sections([extraction.Section("Warm up the tokenizer and the splitter.")])
        import psutil
        before = psutil.Process().memory_info().rss
        sections, _ = extraction.extract_sections(extraction.detect_kind(data), data)
        chunks = extraction.chunk_sections(sections)
        # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would be pytest's own peak.
        status = open("/proc/self/status").read()
        peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
        print(json.dumps({{"before": before, "peak": peak, "chunks": len(chunks),
                           "chars": sum(len(s.text) for s in sections)}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900, check=True,
                          cwd=str(Path(__file__).resolve().parents[2]))  # fmt: skip
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["chars"] > 700_000 and measured["chunks"] > 300  # it did read it all
    assert measured["peak"] - measured["before"] < budget, measured
