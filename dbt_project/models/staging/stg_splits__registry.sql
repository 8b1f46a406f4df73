select market_ticker, split, volatility_class as volatility_class_at_assignment, assigned_on, seed
from {{ source('splits', 'registry') }}
