import hashlib

import factory
from django.core.files.base import ContentFile

from documents.models import Chunk, Collection, Document
from saas.core import crypto
from tests.accounts.factories import OrgOwnedFactory


class CollectionFactory(OrgOwnedFactory):
    class Meta:
        model = Collection

    name = factory.Sequence(lambda n: f"Collection {n}")


class DocumentFactory(OrgOwnedFactory):
    class Meta:
        model = Document

    collection = factory.SubFactory(CollectionFactory, organization=factory.SelfAttribute("..organization"))
    title = factory.Sequence(lambda n: f"Handbook {n}")
    filename = "handbook.md"
    kind = Document.Kind.MARKDOWN
    size_bytes = 20
    sha256 = factory.Sequence(lambda n: hashlib.sha256(str(n).encode()).hexdigest())
    file = factory.LazyAttribute(lambda o: ContentFile(b"# Handbook\n\nHello.", name="handbook.md"))
    status = Document.Status.READY


class ChunkFactory(OrgOwnedFactory):
    class Meta:
        model = Chunk

    document = factory.SubFactory(DocumentFactory, organization=factory.SelfAttribute("..organization"))
    collection = factory.SelfAttribute("document.collection")
    position = factory.Sequence(int)
    text_encrypted = factory.LazyFunction(lambda: crypto.encrypt("A passage of the handbook."))
    token_count = 6
    embedding = factory.LazyFunction(lambda: [0.05] * 384)
    search_vector = ""
