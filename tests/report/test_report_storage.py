"""The run page says how a set is stored and what sharing it takes."""


def test_run_page_says_how_a_set_is_stored():
    from meddistill.report.run_page import _storage_items

    dct = {"parameterization": {"name": "dct", "keep": 14}, "stored_bytes": 18880}
    assert _storage_items(dct) == [
        ("stored as", "14×14 lowest DCT frequencies per channel (dct)"),
        ("bytes to share", "18,880"),
    ]
    latent = {"parameterization": {"name": "latent", "code_shape": [3, 14, 14],
                                   "decoder_values": 11011}}  # fmt: skip
    assert _storage_items(latent) == [
        ("stored as", "3×14×14 latent codes + a decoder of 11011 values (latent)")
    ]
    assert _storage_items({"stored_bytes": 100}) == [("bytes to share", "100")]
