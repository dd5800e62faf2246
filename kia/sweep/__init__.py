"""`kia sweep`: how many facts fit in this adapter before it harms the model?

- `config`: `SweepConfig`, `SweepResult`, `Recipe` (K HighlyKnown, P paraphrases, M MaybeKnown per
  fact), `Point`, and `parse_ints` for the grid's lists;
- `run`: `sweep()`, the grid of build -> inject -> audit points, resume, the outputs;
- `grid`: the one held-out set and the grid's fit to the probe run;
- `shared`: the loaded base model, the base arm's cache and the base benchmark scores;
- `table`: one row per point and the recommendation; `findings`: the paper's findings checked;
- `page`: capacity.html (`render_capacity`) and its template `capacity.html.j2`.
"""

from kia.sweep.config import Point, Recipe, SweepConfig, SweepResult, parse_ints
from kia.sweep.page import render_capacity
from kia.sweep.run import sweep

__all__ = ["Point", "Recipe", "SweepConfig", "SweepResult", "parse_ints", "render_capacity", "sweep"]
