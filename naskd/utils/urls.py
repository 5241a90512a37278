"""Database URLs as they may be shown or written down."""
from __future__ import annotations

import re


def shown(url: str) -> str:
    """``url`` with any password masked (``user:***@host``): what naskd prints and writes into run files. An
    URL SQLAlchemy cannot parse is masked by the shape of its ``user:password@`` part."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  an unparsable URL: a user:password@ part masked by its shape
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
