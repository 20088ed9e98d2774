"""What the synthetic world is: behaviour knobs, vocabularies and demographics.

Module constants rather than config keys: ``GenerateConfig`` sets the
world's size and seed, and the strength of its ordered viewing (series share,
binge and autoplay probabilities). A number in parentheses names the property of the
world it serves (the list in :mod:`ytspark.generate`).
"""
from __future__ import annotations

from ytspark.schema import DAY  # noqa: F401  (re-exported: the generator's time unit)

# ------------------------------------------------------------------ behaviour knobs
# Module constants rather than config keys: they define *what* the synthetic world
# is, GenerateConfig its size, seed and ordered viewing (series_share, p_binge, p_autoplay).
SLATE_SIZE = 8  # impressions shown per home-page visit (7)
P_INTENT_SHOWN = 0.35  # a video the user came for is in the home slate this often, else reached elsewhere (7)
P_SEARCH_VISIT = 0.3  # share of visits that start with a search (6)
P_SEARCH_HIT = 0.9  # first watch after a search is from the searched category (6)
P_SEQ_WITHIN = 0.5  # next watch in the same visit follows the last watch's channel (4)
P_SEQ_ACROSS = 0.3  # same, for the first watch of a visit (4)
SERIES_MIN_LENGTH = 2  # a series has 2 + Poisson(SERIES_EXTRA_MEAN) episodes, cut at its channel's last upload (4)
SERIES_EXTRA_MEAN = 4.0
P_OWN_LANGUAGE = 0.8  # interest-driven watches restricted to the user's language (2)
P_TRENDING = 0.15  # a watch picked by global popularity x freshness, whatever the interest (2)
FRESH_TAU_DAYS = 3.0  # freshness burst decay (5)
FRESH_BOOST = 10.0  # a just-uploaded video weighs (1 + FRESH_BOOST) x its popularity (5)
FRESH_WINDOW_TAUS = 5.0  # burst truncated after this many taus (exp(-5) < 1 %) (5)
ZIPF_EXPONENT = 1.2  # video popularity ~ rank^-s (2)
CHANNEL_MAIN_CATEGORY = 0.85  # a channel's videos are in its main category this often (2)
MIN_VISITS = 3  # every user gets at least this many visits, each with >= 1 watch (8)
VISIT_MARGIN = 6 * 3600.0  # visits start at least this long before the window end
DRIFT_MAX = 0.6  # interest mixes up to this far toward a second interest vector (3)
DIRICHLET_CONCENTRATION = 0.3  # alpha_0 = this * categories: < 1 per category, peaky interests (1)
# Affinity a = interest[category] * quality; x = log(categories * a + AFF_EPS) is ~0 for
# an average pair, positive for a favourite category. Click and completion are logistic in x
# and in log(duration / DURATION_REF): a long video is clicked a little less and abandoned
# sooner, so expected watch time grows far slower than duration and affinity decides (7).
AFF_EPS = 0.05
DURATION_REF = 600.0
CLICK_BIAS, CLICK_SLOPE, CLICK_DURATION_SLOPE = -3.8, 1.5, 0.4
COMPLETION_BIAS, COMPLETION_SLOPE, COMPLETION_CONC = -0.3, 0.8, 6.0
COMPLETION_DURATION_SLOPE = 0.9
MAX_DURATION = 3 * 3600.0
USERS_PER_CHUNK = 1000  # users simulated per pandas batch yielded by a partition

# ------------------------------------------------------------------ vocabularies
# Category names with disjoint word lists: titles and queries are drawn from them, so
# a search token identifies a category (6) and titles carry topical words (2).
_CATEGORY_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("music", ("song", "album", "live", "concert", "remix", "lyrics", "guitar", "piano", "cover", "band", "playlist", "acoustic")),
    ("gaming", ("gameplay", "walkthrough", "speedrun", "minecraft", "boss", "level", "multiplayer", "console", "esports", "mod", "stream", "rpg")),
    ("news", ("breaking", "election", "report", "politics", "economy", "interview", "headlines", "debate", "policy", "briefing", "crisis", "world")),
    ("sports", ("football", "goals", "highlights", "match", "basketball", "tennis", "league", "championship", "transfer", "training", "coach", "score")),
    ("comedy", ("funny", "prank", "standup", "sketch", "parody", "jokes", "bloopers", "roast", "hilarious", "skit", "meme", "laugh")),
    ("education", ("lecture", "lesson", "explained", "math", "physics", "history", "tutorial", "course", "exam", "chemistry", "biology", "learn")),
    ("cooking", ("recipe", "kitchen", "baking", "pasta", "dinner", "chicken", "dessert", "vegan", "grill", "bread", "spicy", "chef")),
    ("travel", ("trip", "travel", "city", "beach", "hotel", "flight", "hiking", "island", "backpacking", "tour", "vlog", "adventure")),
    ("tech", ("review", "unboxing", "smartphone", "laptop", "gadget", "camera", "specs", "benchmark", "android", "iphone", "pc", "build")),
    ("beauty", ("makeup", "skincare", "lipstick", "hair", "nails", "routine", "foundation", "glow", "haul", "palette", "serum", "salon")),
    ("fitness", ("workout", "yoga", "cardio", "abs", "gym", "stretching", "hiit", "squat", "running", "muscle", "pilates", "fatloss")),
    ("science", ("space", "experiment", "quantum", "universe", "planet", "rocket", "evolution", "nasa", "telescope", "atoms", "climate", "discovery")),
    ("film", ("trailer", "movie", "scene", "director", "cinema", "actor", "oscar", "sequel", "boxoffice", "screenplay", "premiere", "cast")),
    ("kids", ("cartoon", "nursery", "toys", "rhymes", "abc", "puppet", "bedtime", "colors", "animation", "story", "kindergarten", "playtime")),
    ("autos", ("car", "engine", "drift", "supercar", "motorcycle", "racing", "restoration", "electric", "truck", "horsepower", "dashcam", "garage")),
    ("pets", ("dog", "cat", "puppy", "kitten", "parrot", "aquarium", "grooming", "rescue", "cute", "hamster", "vet", "leash")),
    ("diy", ("woodworking", "craft", "repair", "renovation", "tools", "garden", "decor", "handmade", "sewing", "paint", "plumbing", "furniture")),
    ("finance", ("stocks", "investing", "crypto", "budget", "money", "trading", "retirement", "bitcoin", "taxes", "savings", "dividend", "market")),
    ("fashion", ("outfit", "style", "streetwear", "sneakers", "runway", "lookbook", "vintage", "dress", "designer", "thrift", "jewelry", "trends")),
    ("podcast", ("podcast", "conversation", "talkshow", "guest", "panel", "commentary", "opinion", "discussion", "mic", "host", "storytime", "philosophy")),
    ("anime", ("anime", "manga", "cosplay", "opening", "episode", "waifu", "shonen", "otaku", "ova", "isekai", "mecha", "studio")),
    ("asmr", ("asmr", "whisper", "tapping", "relaxing", "sleep", "triggers", "rain", "soft", "crinkle", "ambience", "calm", "tingles")),
    ("spirituality", ("meditation", "prayer", "mindfulness", "sermon", "chanting", "faith", "temple", "worship", "gospel", "zen", "scripture", "blessing")),
    ("art", ("drawing", "painting", "sketching", "watercolor", "illustration", "portrait", "sculpture", "digital", "canvas", "calligraphy", "gallery", "charcoal")),
)
# Typical durations (median seconds) per category: "completed" = half watched is a
# different bar for a song than for a podcast.
_CATEGORY_MEDIAN_SECONDS = {
    "music": 240, "gaming": 1200, "news": 300, "sports": 420, "comedy": 360, "education": 900,
    "cooking": 600, "travel": 720, "tech": 660, "beauty": 600, "fitness": 1500, "science": 780,
    "film": 150, "kids": 420, "autos": 720, "pets": 240, "diy": 900, "finance": 840, "fashion": 540,
    "podcast": 3600, "anime": 1400, "asmr": 1800, "spirituality": 1200, "art": 840,
}
_GENERIC_WORDS = ("best", "new", "top", "how", "full", "official", "2026", "ultimate", "easy", "part")
WORDS_PER_CATEGORY = 12

# Demographics (1). Countries with population shares and their languages.
COUNTRIES = ("US", "IN", "BR", "GB", "DE", "JP", "MX", "FR", "KR")
_COUNTRY_P = (0.30, 0.20, 0.12, 0.08, 0.07, 0.07, 0.07, 0.05, 0.04)
LANGUAGES = ("en", "hi", "pt", "de", "ja", "es", "fr", "ko")
_COUNTRY_LANGUAGES = {  # country -> ((language, p), ...)
    "US": (("en", 0.92), ("es", 0.08)),
    "IN": (("hi", 0.6), ("en", 0.4)),
    "BR": (("pt", 1.0),),
    "GB": (("en", 1.0),),
    "DE": (("de", 0.85), ("en", 0.15)),
    "JP": (("ja", 1.0),),
    "MX": (("es", 1.0),),
    "FR": (("fr", 0.9), ("en", 0.1)),
    "KR": (("ko", 1.0),),
}
GENDERS = ("f", "m", None)  # None: not given (3 %)
_GENDER_P = (0.485, 0.485, 0.03)
DEVICES = ("mobile", "desktop", "tv", "tablet")
# Age buckets follow schema.AGE_BUCKETS lower bounds (0, 18, 25, 35, 45, 55, 65); the
# youngest users are 13.
_AGE_RANGES = ((13, 18), (18, 25), (25, 35), (35, 45), (45, 55), (55, 65), (65, 80))
_AGE_P = (0.10, 0.22, 0.25, 0.18, 0.12, 0.08, 0.05)
_DEVICE_P_BY_AGE = (
    (0.75, 0.10, 0.05, 0.10),
    (0.72, 0.18, 0.05, 0.05),
    (0.62, 0.23, 0.10, 0.05),
    (0.55, 0.25, 0.13, 0.07),
    (0.48, 0.27, 0.17, 0.08),
    (0.42, 0.28, 0.20, 0.10),
    (0.35, 0.30, 0.25, 0.10),
)
# Std-dev of the log-shifts of the interest prior per demographic value (1).
SHIFT_SD_AGE, SHIFT_SD_GENDER, SHIFT_SD_COUNTRY = 1.0, 0.6, 0.5
P_NO_AGE = 0.05  # these users give birth_year instead of age (contract: "age or birth_year")
