"""Time-based one-time passwords (RFC 6238) for the second factor of interactive keys.

The usual authenticator-app parameters: a 160-bit random seed, HMAC-SHA1,
6 digits, 30-second steps. A code is accepted for the step before, the step
of and the step after the server's clock (a phone's clock may be 30 s off)
and never twice: the caller keeps the last step accepted and a code of that
step or an earlier one is refused, so a code seen over a shoulder or in a log
cannot be replayed.
"""

from __future__ import annotations

import hmac
import io
import time

import pyotp
import qrcode
import qrcode.image.svg

ISSUER = "idlink"
STEP_SECONDS = 30
DIGITS = 6
# Steps either side of the server's clock that are accepted.
DRIFT_STEPS = 1


def new_secret() -> str:
    """A new random seed, base32 as authenticator apps take it."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str, key_id: str) -> str:
    """The otpauth:// URI an authenticator app enrols from (Key Uri Format)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=f"{account}:{key_id}", issuer_name=ISSUER
    )


def qr_svg(uri: str) -> str:
    """The URI as a QR code, an SVG document made with qrcode's SVG path factory."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    out = io.BytesIO()
    image.save(out)
    return out.getvalue().decode()


def code_at(secret: str, step: int) -> str:
    """The code of one time step."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).at(step * STEP_SECONDS)


def current_step(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // STEP_SECONDS)


def verify(secret: str, code: str, last_step: int, now: float | None = None) -> int | None:
    """The step a code belongs to, if it is valid now and newer than ``last_step``; else None."""
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    step = current_step(now)
    found = None
    # Every candidate is compared (in constant time), so timing does not tell which matched.
    for candidate in range(step - DRIFT_STEPS, step + DRIFT_STEPS + 1):
        if hmac.compare_digest(code_at(secret, candidate), code) and candidate > last_step:
            found = candidate
    return found
