"""Language codes: Whisper's → each translation model family's.

Captions carry Whisper's codes (``en``, ``zh``, ``jw``, ``yue`` …); every backend speaks its
own: NLLB-200 wants ``zho_Hans``, M2M-100 wants the token ``__zh__``, Apertium names its
pairs with ISO 639-3 codes (``eng-spa``) or, for older pairs, ISO 639-1 (``es-pt``).

Pure data and pure functions; nothing here imports a model or a package.
A target may also be given in a family's own code (``zho_Hant``, ``ast``, ``epo``): the
``to_*`` functions accept those as they are.
"""

from __future__ import annotations

# Whisper's languages, in its own order (faster_whisper.tokenizer._LANGUAGE_CODES; a test
# keeps the two equal).
WHISPER_LANGUAGES: tuple[str, ...] = tuple(
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw "
    "he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt "
    "my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl "
    "tr tt uk ur uz vi yi yo zh yue".split())

# -- NLLB-200 ---------------------------------------------------------------------------------

# Every language token of NLLB-200 (FLORES-200 codes), as in its tokenizer.
NLLB_LANGUAGES: tuple[str, ...] = tuple(
    "ace_Arab ace_Latn acm_Arab acq_Arab aeb_Arab afr_Latn ajp_Arab aka_Latn amh_Ethi apc_Arab "
    "arb_Arab ars_Arab ary_Arab arz_Arab asm_Beng ast_Latn awa_Deva ayr_Latn azb_Arab azj_Latn "
    "bak_Cyrl bam_Latn ban_Latn bel_Cyrl bem_Latn ben_Beng bho_Deva bjn_Arab bjn_Latn bod_Tibt "
    "bos_Latn bug_Latn bul_Cyrl cat_Latn ceb_Latn ces_Latn cjk_Latn ckb_Arab crh_Latn cym_Latn "
    "dan_Latn deu_Latn dik_Latn dyu_Latn dzo_Tibt ell_Grek eng_Latn epo_Latn est_Latn eus_Latn "
    "ewe_Latn fao_Latn pes_Arab fij_Latn fin_Latn fon_Latn fra_Latn fur_Latn fuv_Latn gla_Latn "
    "gle_Latn glg_Latn grn_Latn guj_Gujr hat_Latn hau_Latn heb_Hebr hin_Deva hne_Deva hrv_Latn "
    "hun_Latn hye_Armn ibo_Latn ilo_Latn ind_Latn isl_Latn ita_Latn jav_Latn jpn_Jpan kab_Latn "
    "kac_Latn kam_Latn kan_Knda kas_Arab kas_Deva kat_Geor knc_Arab knc_Latn kaz_Cyrl kbp_Latn "
    "kea_Latn khm_Khmr kik_Latn kin_Latn kir_Cyrl kmb_Latn kon_Latn kor_Hang kmr_Latn lao_Laoo "
    "lvs_Latn lij_Latn lim_Latn lin_Latn lit_Latn lmo_Latn ltg_Latn ltz_Latn lua_Latn lug_Latn "
    "luo_Latn lus_Latn mag_Deva mai_Deva mal_Mlym mar_Deva min_Latn mkd_Cyrl plt_Latn mlt_Latn "
    "mni_Beng khk_Cyrl mos_Latn mri_Latn zsm_Latn mya_Mymr nld_Latn nno_Latn nob_Latn npi_Deva "
    "nso_Latn nus_Latn nya_Latn oci_Latn gaz_Latn ory_Orya pag_Latn pan_Guru pap_Latn pol_Latn "
    "por_Latn prs_Arab pbt_Arab quy_Latn ron_Latn run_Latn rus_Cyrl sag_Latn san_Deva sat_Beng "
    "scn_Latn shn_Mymr sin_Sinh slk_Latn slv_Latn smo_Latn sna_Latn snd_Arab som_Latn sot_Latn "
    "spa_Latn als_Latn srd_Latn srp_Cyrl ssw_Latn sun_Latn swe_Latn swh_Latn szl_Latn tam_Taml "
    "tat_Cyrl tel_Telu tgk_Cyrl tgl_Latn tha_Thai tir_Ethi taq_Latn taq_Tfng tpi_Latn tsn_Latn "
    "tso_Latn tuk_Latn tum_Latn tur_Latn twi_Latn tzm_Tfng uig_Arab ukr_Cyrl umb_Latn urd_Arab "
    "uzn_Latn vec_Latn vie_Latn war_Latn wol_Latn xho_Latn ydd_Hebr yor_Latn yue_Hant zho_Hans "
    "zho_Hant zul_Latn".split())

# Whisper → NLLB. Where NLLB has several varieties, the one Whisper's training speech is
# mostly in: Modern Standard Arabic, Western Persian, Bokmål, Standard Malay, Simplified
# Chinese, Cyrillic Serbian, North Azerbaijani, Halh Mongolian, Tosk Albanian.
WHISPER_TO_NLLB: dict[str, str] = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "as": "asm_Beng", "az": "azj_Latn",
    "ba": "bak_Cyrl", "be": "bel_Cyrl", "bg": "bul_Cyrl", "bn": "ben_Beng", "bo": "bod_Tibt",
    "bs": "bos_Latn", "ca": "cat_Latn", "cs": "ces_Latn", "cy": "cym_Latn", "da": "dan_Latn",
    "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn", "et": "est_Latn",
    "eu": "eus_Latn", "fa": "pes_Arab", "fi": "fin_Latn", "fo": "fao_Latn", "fr": "fra_Latn",
    "gl": "glg_Latn", "gu": "guj_Gujr", "ha": "hau_Latn", "he": "heb_Hebr", "hi": "hin_Deva",
    "hr": "hrv_Latn", "ht": "hat_Latn", "hu": "hun_Latn", "hy": "hye_Armn", "id": "ind_Latn",
    "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "jw": "jav_Latn", "ka": "kat_Geor",
    "kk": "kaz_Cyrl", "km": "khm_Khmr", "kn": "kan_Knda", "ko": "kor_Hang", "lb": "ltz_Latn",
    "ln": "lin_Latn", "lo": "lao_Laoo", "lt": "lit_Latn", "lv": "lvs_Latn", "mg": "plt_Latn",
    "mi": "mri_Latn", "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mn": "khk_Cyrl", "mr": "mar_Deva",
    "ms": "zsm_Latn", "mt": "mlt_Latn", "my": "mya_Mymr", "ne": "npi_Deva", "nl": "nld_Latn",
    "nn": "nno_Latn", "no": "nob_Latn", "oc": "oci_Latn", "pa": "pan_Guru", "pl": "pol_Latn",
    "ps": "pbt_Arab", "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "sa": "san_Deva",
    "sd": "snd_Arab", "si": "sin_Sinh", "sk": "slk_Latn", "sl": "slv_Latn", "sn": "sna_Latn",
    "so": "som_Latn", "sq": "als_Latn", "sr": "srp_Cyrl", "su": "sun_Latn", "sv": "swe_Latn",
    "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu", "tg": "tgk_Cyrl", "th": "tha_Thai",
    "tk": "tuk_Latn", "tl": "tgl_Latn", "tr": "tur_Latn", "tt": "tat_Cyrl", "uk": "ukr_Cyrl",
    "ur": "urd_Arab", "uz": "uzn_Latn", "vi": "vie_Latn", "yi": "ydd_Hebr", "yo": "yor_Latn",
    "zh": "zho_Hans", "yue": "yue_Hant",
}
# Whisper languages NLLB-200 does not have.
NLLB_MISSING = frozenset({"br", "haw", "la"})

# Target spellings beyond Whisper's codes that name an NLLB variety.
NLLB_ALIASES: dict[str, str] = {
    "zh-Hans": "zho_Hans", "zh-CN": "zho_Hans", "zh-SG": "zho_Hans",
    "zh-Hant": "zho_Hant", "zh-TW": "zho_Hant", "zh-HK": "zho_Hant",
    "nb": "nob_Latn", "eo": "epo_Latn", "ast": "ast_Latn", "ga": "gle_Latn", "gd": "gla_Latn",
    "ig": "ibo_Latn", "zu": "zul_Latn", "xh": "xho_Latn", "ceb": "ceb_Latn", "ky": "kir_Cyrl",
    "ckb": "ckb_Arab", "ug": "uig_Arab", "or": "ory_Orya", "ti": "tir_Ethi", "rw": "kin_Latn",
    "ny": "nya_Latn", "wo": "wol_Latn", "sc": "srd_Latn",
}

# -- M2M-100 ----------------------------------------------------------------------------------

M2M100_LANGUAGES: tuple[str, ...] = tuple(
    "af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa ff fi fr fy ga gd gl "
    "gu ha he hi hr ht hu hy id ig ilo is it ja jv ka kk km kn ko lb lg ln lo lt lv mg mk ml "
    "mn mr ms my ne nl no ns oc or pa pl ps pt ro ru sd si sk sl so sq sr ss su sv sw ta th tl "
    "tn tr uk ur uz vi wo xh yi yo zh zu".split())
# Whisper spells Javanese 'jw' (an old code); M2M-100 'jv'.
_WHISPER_TO_M2M_RENAMED = {"jw": "jv"}
WHISPER_TO_M2M100: dict[str, str] = {
    **{c: c for c in WHISPER_LANGUAGES if c in M2M100_LANGUAGES},
    **_WHISPER_TO_M2M_RENAMED,
}
M2M100_MISSING = frozenset(c for c in WHISPER_LANGUAGES if c not in WHISPER_TO_M2M100)

# -- Apertium ---------------------------------------------------------------------------------

# Whisper → the codes an Apertium pair may use for the language, preferred first: the
# ISO 639-3 code of current pairs, then older or macro-language spellings, then the
# two-letter code of old pairs (es-pt, en-gl, eu-en …). Serbian, Croatian and Bosnian are
# one Apertium language, Serbo-Croatian ('hbs').
WHISPER_TO_APERTIUM: dict[str, tuple[str, ...]] = {
    "af": ("afr",), "am": ("amh",), "ar": ("ara", "arb"), "as": ("asm",), "az": ("aze", "azj"),
    "ba": ("bak",), "be": ("bel",), "bg": ("bul",), "bn": ("ben",), "bo": ("bod", "tib"),
    "br": ("bre",), "bs": ("bos", "hbs"), "ca": ("cat",), "cs": ("ces", "cze"), "cy": ("cym", "wel"),
    "da": ("dan",), "de": ("deu", "ger"), "el": ("ell", "gre"), "en": ("eng",), "es": ("spa",),
    "et": ("est", "ekk"), "eu": ("eus", "baq"), "fa": ("fas", "pes", "per"), "fi": ("fin",),
    "fo": ("fao",), "fr": ("fra", "fre"), "gl": ("glg",), "gu": ("guj",), "ha": ("hau",),
    "haw": ("haw",), "he": ("heb",), "hi": ("hin",), "hr": ("hrv", "hbs"), "ht": ("hat",),
    "hu": ("hun",), "hy": ("hye", "arm"), "id": ("ind",), "is": ("isl", "ice"), "it": ("ita",),
    "ja": ("jpn",), "jw": ("jav",), "ka": ("kat", "geo"), "kk": ("kaz",), "km": ("khm",),
    "kn": ("kan",), "ko": ("kor",), "la": ("lat",), "lb": ("ltz",), "ln": ("lin",), "lo": ("lao",),
    "lt": ("lit",), "lv": ("lav", "lvs"), "mg": ("mlg", "plt"), "mi": ("mri", "mao"),
    "mk": ("mkd", "mac"), "ml": ("mal",), "mn": ("mon", "khk"), "mr": ("mar",),
    "ms": ("zlm", "msa", "zsm", "may"), "mt": ("mlt",), "my": ("mya", "bur"), "ne": ("nep", "npi"),
    "nl": ("nld", "dut"), "nn": ("nno",), "no": ("nob", "nor"), "oc": ("oci",), "pa": ("pan",),
    "pl": ("pol",), "ps": ("pus", "pbt"), "pt": ("por",), "ro": ("ron", "rum"), "ru": ("rus",),
    "sa": ("san",), "sd": ("snd",), "si": ("sin",), "sk": ("slk", "slo"), "sl": ("slv",),
    "sn": ("sna",), "so": ("som",), "sq": ("sqi", "als", "alb"), "sr": ("srp", "hbs"),
    "su": ("sun",), "sv": ("swe",), "sw": ("swa", "swh"), "ta": ("tam",), "te": ("tel",),
    "tg": ("tgk",), "th": ("tha",), "tk": ("tuk",), "tl": ("tgl",), "tr": ("tur",), "tt": ("tat",),
    "uk": ("ukr",), "ur": ("urd",), "uz": ("uzb", "uzn"), "vi": ("vie",), "yi": ("yid", "ydd"),
    "yo": ("yor",), "zh": ("zho", "cmn", "chi"), "yue": ("yue",),
}


def _base(code: str) -> str:
    return code.split("-")[0].split("_")[0]


def to_nllb(code: str) -> str | None:
    """NLLB-200's language token for a Whisper code (or an NLLB code / alias), else None."""
    if code in NLLB_LANGUAGES:
        return code
    return WHISPER_TO_NLLB.get(code) or NLLB_ALIASES.get(code)


def to_m2m100(code: str) -> str | None:
    """M2M-100's language token (``__zh__``) for a Whisper code (or an M2M-100 code), else None."""
    if code.startswith("__") and code.endswith("__") and code[2:-2] in M2M100_LANGUAGES:
        return code
    m2m = WHISPER_TO_M2M100.get(code)
    if m2m is None and code in M2M100_LANGUAGES:
        m2m = code
    if m2m is None and "-" in code:  # zh-Hans, pt-BR … : the language is still there
        m2m = WHISPER_TO_M2M100.get(_base(code))
    return f"__{m2m}__" if m2m else None


def apertium_codes(code: str) -> tuple[str, ...]:
    """The codes an Apertium pair may use for a Whisper code, preferred first (always at
    least the code itself, so a target given as an Apertium code such as 'epo' works)."""
    out = list(WHISPER_TO_APERTIUM.get(code) or WHISPER_TO_APERTIUM.get(_base(code), ()))
    for extra in (code, _base(code)):
        if extra not in out:
            out.append(extra)
    return tuple(out)


def from_apertium(code: str) -> tuple[str, ...]:
    """The Whisper codes an Apertium language code stands for ('spa' → ('es',), 'hbs' →
    ('bs', 'hr', 'sr')); an unknown code stands for itself."""
    base = _base(code)
    found = tuple(w for w, codes in WHISPER_TO_APERTIUM.items() if base in codes or base == w)
    return found or (base,)
