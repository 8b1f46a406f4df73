select market_ticker, category, series_ticker, settled_ms, close_ms, outcome, last_price_prob, brier
from {{ source('features', 'resolution_history') }}
