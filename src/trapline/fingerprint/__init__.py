"""Near-duplicate signatures: MinHash over normalised text, URL-template and subject templates."""

from trapline.fingerprint.signature import (
    FingerprintInput,
    Fingerprints,
    Signature,
    fingerprint,
    fingerprint_batch,
    fingerprint_message,
    input_of,
)

__all__ = [
    "FingerprintInput",
    "Fingerprints",
    "Signature",
    "fingerprint",
    "fingerprint_batch",
    "fingerprint_message",
    "input_of",
]
