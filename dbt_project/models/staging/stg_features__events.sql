{#- Every column of the per-event feature table, plus the partition day as a date. -#}
select * exclude (date), cast(date as date) as event_date
from {{ source('features', 'events') }}
