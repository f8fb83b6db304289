"""Orders become transfers: the names this site's new instances bring are asked against every live order (seconds
after the mint), and each order is swept once when it is created and then every `catch_up_interval_s` (whatever
was missed: an order created after its files, a name the catalog did not know for minutes).

Matching is the catalog's search itself (one implementation of the search language, over the catalog's read model
of every site): `CatalogSearch` asks it over HTTP. Nothing is lost while the catalog is down or behind: names stay
pending until the catalog knows them.
"""

from __future__ import annotations

import asyncpg
import structlog

from services.transfer import repository
from services.transfer.catalog_port import CatalogSearch, SearchRefused
from services.transfer.dispatch.lanes import TransferFigures
from services.transfer.options import TransferOptions

log = structlog.get_logger()

GIVE_UP_TRIES = 20  # ~5 minutes of asking: then the catch-up pass finds the name


class OrderEvaluator:
    """Turns pending names and live orders into transfers."""

    def __init__(self, pool: asyncpg.Pool, catalog: CatalogSearch, site: str, options: TransferOptions,
                 figures: TransferFigures) -> None:
        self.pool = pool
        self.catalog = catalog
        self.site = site
        self.options = options
        self.figures = figures

    async def evaluate_pending(self) -> int:
        """Ask the live orders about the pending names (in batches); the number of transfers created."""
        created = 0
        while True:
            async with self.pool.acquire() as conn:
                names = await repository.pending_names(conn, self.options.evaluation_batch)
                orders = await repository.live_orders(conn)
            if not names:
                return created
            if not any(order.destination != self.site for order in orders):
                async with self.pool.acquire() as conn:  # no order to ask: nothing to wait for either
                    await repository.forget_pending(conn, names)
                continue
            known = await self.catalog.names_matching({"name": {"in": names}}, names, held_at=self.site)
            wanted = []
            for order in orders:
                if order.destination == self.site or not known:
                    continue
                try:
                    matching = await self.catalog.names_matching(order.search, sorted(known), held_at=self.site)
                except SearchRefused as e:  # accepted when created, refused now (a newer catalog): skip the order
                    log.error("order_search_refused", order_id=order.order_id, reason=str(e))
                    continue
                wanted += [(name, order.destination, order.order_id, order.priority) for name in sorted(matching)]
            unknown = sorted(set(names) - known)
            async with self.pool.acquire() as conn, conn.transaction():
                new = await repository.want_transfers(conn, wanted)
                await repository.forget_pending(conn, sorted(known))
                # Names the catalog does not know yet wait (not_before moves on), so this loop ends.
                given_up = await repository.postpone_pending(conn, unknown, give_up_after=GIVE_UP_TRIES)
            if given_up:
                log.warning("evaluation_left_to_catch_up", names=given_up,
                            reason="the catalog did not know them after repeated asking")
            created += new
            self.figures.created.inc(new)

    async def catch_up(self, *, only_new: bool = False) -> int:
        """Sweep orders (only those never swept, with `only_new`) for matching files this site holds and the
        destination lacks; the number of transfers created."""
        async with self.pool.acquire() as conn:
            orders = [o for o in await repository.live_orders(conn) if not only_new or o.caught_up_at is None]
        created = 0
        for order in orders:
            if order.destination == self.site:
                continue
            try:
                created += await self._sweep(order)
            except SearchRefused as e:  # marked swept all the same: the full sweep says so again, not every tick
                log.error("order_search_refused", order_id=order.order_id, reason=str(e))
            async with self.pool.acquire() as conn:
                await repository.mark_caught_up(conn, order.order_id)
            log.info("order_caught_up", order_id=order.order_id, destination=order.destination)
        return created

    async def _sweep(self, order: repository.LiveOrder) -> int:
        created = 0
        batch: list[tuple[str, str, str, int]] = []
        async for name in self.catalog.files_matching(order.search, held_at=self.site, lacking_at=order.destination):
            batch.append((name, order.destination, order.order_id, order.priority))
            if len(batch) >= self.options.evaluation_batch:
                created += await self._want(batch)
                batch = []
        return created + await self._want(batch)

    async def _want(self, batch: list[tuple[str, str, str, int]]) -> int:
        if not batch:
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            new = await repository.want_transfers(conn, batch)
        self.figures.created.inc(new)
        return new
