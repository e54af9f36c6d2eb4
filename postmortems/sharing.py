"""A post-mortem's export page made into a PDF.

WeasyPrint lays the page out (a maintained HTML/CSS-to-PDF library on Pango, no browser to
drive). It is given a fetcher that refuses every URL: the page is self-contained, and a PDF
rendered on the server must never be made to reach another address by what a post-mortem
holds.
"""

from __future__ import annotations


def pdf_from_html(page: str, *, base_url: str) -> bytes:
    # Imported here: the library loads Pango and its fonts, which no other page needs.
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    pdf = HTML(
        string=page, base_url=base_url, url_fetcher=URLFetcher(allowed_protocols=())
    ).write_pdf()
    assert pdf is not None  # write_pdf returns the bytes when given no target
    return pdf
