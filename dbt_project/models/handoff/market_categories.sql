{{ config(location=kfs_location('market_categories')) }}
{#- Volatility class per market (DESIGN.md section 4; thresholds from features.splits through
    kfs_volatility_class). A hand-off: the Python split asset reads this file to stratify new markets. -#}
select
    market_ticker,
    events,
    volatility,
    {{ kfs_volatility_class('volatility') }} as volatility_class
from {{ ref('int_market_stats') }}
order by market_ticker
