"""Signing a reviewed request, and committing the result all at once or not at all.

:func:`prepare_signing` does everything in memory: it opens the keys, signs every
payload (each signature verified as it is made, and root ceremonies checked as a
root chain), builds the response, attests it with the officer's GnuPG key and
prepares the journal line. :func:`commit` then writes the new payloads, the journal
line and the response; if any write fails, what was written is undone, so a failed
ceremony leaves no response, no journal line and no stored payload behind.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from securesystemslib.signer import Signature, Signer
from tuf.api.metadata import Metadata, Root
from wavesign.shared.bundles import SignatureEntry, SigningResponse
from wavesign.shared.canonical import digest
from wavesign.shared.errors import WavesignError
from wavesign.shared.gpg import GnuPG
from wavesign.shared.journal_format import JournalEntry, PayloadRecord
from wavesign.shared.rootchain import verify_root_update
from wavesign.shared.signing import sign_payload
from wavesign.shared.timefmt import format_utc

from .appliance import Appliance
from .journal import now_rfc3339
from .review import Review

__all__ = ["ConfirmationError", "PolicyRefusal", "PreparedSigning", "commit", "prepare_signing"]


class PolicyRefusal(WavesignError):
    """The policy refuses the request."""


class ConfirmationError(WavesignError):
    """The officer's confirmation text does not match the request."""


@dataclass(frozen=True)
class PreparedSigning:
    """A finished ceremony held in memory, ready to be committed."""

    response: SigningResponse
    entry: JournalEntry
    payloads: tuple[dict[str, object], ...]  # signed objects to keep as delta bases


def check_confirmation(review: Review, typed: str) -> None:
    if typed != review.confirmation:
        raise ConfirmationError(
            f"confirmation {typed!r} does not match {review.confirmation!r}: nothing was signed"
        )


def prepare_signing(
    appliance: Appliance,
    review: Review,
    *,
    confirmation: str,
    passphrase: str | None,
    pin: Callable[[str], str] | None = None,
    officer_gnupg_home: str | None = None,
    now: datetime | None = None,
) -> PreparedSigning:
    """Sign every payload of a reviewed request; nothing is written."""
    if not review.ok:
        raise PolicyRefusal(review.reasons[0])
    check_confirmation(review, confirmation)
    signers: dict[str, Signer] = {}
    for keyid in dict.fromkeys(k for _, k in review.signing_keys):
        stored = appliance.keystore.find(keyid)
        if stored is None:
            raise PolicyRefusal(f"key {keyid[:16]} is not in the keystore")
        signers[keyid] = appliance.keystore.signer_for(stored, passphrase, pin)
    entries: list[SignatureEntry] = []
    root_md: Metadata[Root] | None = None
    for payload in review.request.payloads:
        signed = review.to_sign[payload.name]
        sha256 = digest(signed)
        signatures: list[Signature] = []
        for name, keyid in review.signing_keys:
            if name != payload.name:
                continue
            signature = sign_payload(signers[keyid], signed)
            signatures.append(signature)
            entries.append(SignatureEntry(payload.name, sha256, keyid, signature.signature))
        if payload.role == "root":
            root_md = Metadata(Root.from_dict(copy.deepcopy(dict(signed))))
            for signature in signatures:
                root_md.signatures[signature.keyid] = signature
            previous = (
                Metadata(Root.from_dict(copy.deepcopy(review.previous_root)))
                if review.previous_root is not None
                else None
            )
            # The chain is checked as a device would: old and new thresholds.
            verify_root_update(previous, root_md)
    journal_before = appliance.journal.entries()
    head = journal_before[-1].hash() if journal_before else "0" * 64
    response = SigningResponse(
        request_sha256=review.request_sha256,
        signatures=tuple(entries),
        keys=dict(review.root_keys_added) if root_md is not None else {},
        root=root_md.to_dict() if root_md is not None else None,
        journal_head=head,
    )
    officer = appliance.home.config.officer_gpg_key
    if officer:
        gpg = GnuPG(officer_gnupg_home or os.environ.get("GNUPGHOME"))
        response = response.with_attestation(gpg.sign_detached(officer, response.signing_bytes()))
    entry = appliance.journal.next_entry(
        time=format_utc(now) if now else now_rfc3339(),
        kind="sign",
        request_id=review.request.id,
        request_sha256=review.request_sha256,
        purpose=review.request.purpose.to_dict(),
        tag=review.request.purpose.tag,
        payloads=tuple(
            PayloadRecord(
                p.name,
                p.role,
                digest(review.to_sign[p.name]),
                int(review.to_sign[p.name].get("version", 0)),
            )
            for p in review.request.payloads
        ),
        keyids=tuple(dict.fromkeys(k for _, k in review.signing_keys)),
        confirmation=confirmation,
        response_sha256=response.digest(),
    )
    return PreparedSigning(
        response, entry, tuple(review.to_sign[p.name] for p in review.request.payloads)
    )


def commit(
    appliance: Appliance, prepared: PreparedSigning, write_output: Callable[[bytes], None]
) -> None:
    """Store payloads, append the journal line, write the response: all, or none."""
    journal_raw = appliance.journal.raw()
    journal_head = appliance.journal.recorded_head()
    stored: list[str] = []
    journaled = False
    try:
        for signed in prepared.payloads:
            sha256, new = appliance.payloads.add(dict(signed))
            if new:
                stored.append(sha256)
        appliance.journal.append(prepared.entry)
        journaled = True
        write_output(prepared.response.to_bytes())
    except BaseException:
        if journaled:
            appliance.journal.restore(journal_raw, journal_head)
        for sha256 in stored:
            with contextlib.suppress(OSError):
                appliance.payloads.remove(sha256)
        raise
