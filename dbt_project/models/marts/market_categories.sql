{{ config(materialized='external', location=env_var('KFS_LAKE') ~ '/features/market_categories/market_categories.parquet') }}
{#- Volatility class per market (DESIGN.md section 4): stable < 0.1 <= moderate < 0.3 <= volatile.
    The split asset reads this file to stratify new markets. -#}
select
    market_ticker,
    events,
    volatility,
    case when volatility < 0.1 then 'stable' when volatility < 0.3 then 'moderate' else 'volatile' end
        as volatility_class
from {{ ref('int_market_stats') }}
order by market_ticker
