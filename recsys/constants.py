"""Column names and table paths, defined once (MS Recommenders' ``constants.py`` idea).

Every module refers to these names instead of typing string literals, so a rename is one edit.
Table paths are relative to the warehouse root (see ``recsys.tables``).
"""

# --- raw Amazon Reviews 2023 fields, in the official key order --------------------------------
REVIEW_FIELDS = (
    "rating", "title", "text", "images", "asin", "parent_asin",
    "user_id", "timestamp", "helpful_vote", "verified_purchase",
)
META_FIELDS = (
    "main_category", "title", "average_rating", "rating_number", "features", "description",
    "price", "images", "videos", "store", "categories", "details", "parent_asin", "bought_together",
)

# --- warehouse layers, in build order (each has a Great Expectations suite) ----------------------
LAYERS = ("bronze", "silver", "gold", "published")

# --- choices the DAGs' forms offer (their files read these while Airflow parses them) ------------------
MODELS = ("spark_als", "implicit_als", "popularity", "content", "multistage", "cooccurrence", "gru4rec")
MULTISTAGE = "multistage"
COOCCURRENCE, GRU4REC = "cooccurrence", "gru4rec"
SESSION_MODELS = (COOCCURRENCE, GRU4REC)              # next-item models on item sequences (recsys.sessions)
# the multi-stage model's retrievers, and the models whose selected parameters two of them take
RETRIEVERS = ("als", "content", "cooccurrence", "category_popular", "trending")
RETRIEVER_MODELS = {"als": "implicit_als", "content": "content"}        # recsys.models; conf train.params keys
SPLIT_STRATEGIES = ("official", "temporal", "leave_last_out", "random")   # recsys.features

# --- column names ------------------------------------------------------------------------------
USER_ID = "user_id"
ITEM_ID = "parent_asin"
ASIN = "asin"
RATING = "rating"
TIMESTAMP = "timestamp"          # milliseconds since the epoch, as in the raw dump
HELPFUL_VOTE = "helpful_vote"
VERIFIED = "verified_purchase"
CATEGORY = "category"            # the dump's file category (e.g. "Subscription_Boxes"), not main_category
TITLE = "title"
PRICE = "price"                  # parsed number, null when the raw value has none
PRICE_RAW = "price_raw"          # the raw price text as it stood in the file
USER_IDX = "user_idx"
ITEM_IDX = "item_idx"
CONFIDENCE = "confidence"
SPLIT = "split"
SCORE = "score"
RANK = "rank"
VERSION = "version"
MODEL = "model"
ITEMS = "items"                  # a list table's array of item ids, best first (one row per user)

# --- lineage columns (bronze and quarantine) ------------------------------------------------------
SOURCE_FILE = "_source_file"
LINE = "_line"                   # 1-based line number within the decompressed source file
INGESTED_AT = "_ingested_at"
RAW = "raw"                      # quarantine: the raw line text
REASON = "reason"                # quarantine: why the line was refused

# --- tables (paths under the warehouse root) ---------------------------------------------------
BRONZE_REVIEWS = "bronze/reviews"
BRONZE_ITEMS = "bronze/items"
QUARANTINE_REVIEWS = "quarantine/reviews"
QUARANTINE_ITEMS = "quarantine/items"
INGESTED_FILES = "ops/ingested_files"
SILVER_REVIEWS = "silver/reviews"
SILVER_ITEMS = "silver/items"
DELETIONS = "ops/deletions"
INTERACTIONS = "gold/interactions"
USER_INDEX = "gold/user_index"
ITEM_INDEX = "gold/item_index"
SPLITS = "gold/splits"
RECS_USER_TOPK = "gold/recs_user_topk"
RECS_SIMILAR_ITEMS = "gold/recs_similar_items"
RECS_POPULAR = "gold/recs_popular"
RUNS = "ops/runs"
MODEL_REGISTRY = "ops/model_registry"
PUBLISHED = "ops/published"
EVENTS = "ops/events"
INDICATORS = "ops/indicators"
QUALITY_RESULTS = "ops/quality_results"

# --- kinds of raw file ------------------------------------------------------------------------
KIND_REVIEWS = "reviews"
KIND_ITEMS = "items"
META_PREFIX = "meta_"

# Official Amazon Reviews 2023 benchmark cut points (ms): valid >= VALID_CUT, test >= TEST_CUT.
OFFICIAL_VALID_CUT_MS = 1628643414042
OFFICIAL_TEST_CUT_MS = 1658002729837

# API event types (POST /v1/events); the ones naming an item can weigh in a user-item interaction (features).
EVENT_TYPES = frozenset({"impression", "click", "add_to_cart", "purchase", "scroll_end"})
ITEM_EVENT_TYPES = frozenset({"click", "add_to_cart", "purchase"})
