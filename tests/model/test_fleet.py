"""The fleet plan on paper: names, addresses, routes and the balancer's rules, no I/O."""

from __future__ import annotations

import ipaddress

import pytest

from tcpmax.model.fleet import (
    FLEET_NET,
    MAX_CLIENTS,
    MAX_SERVERS,
    SLOTS,
    Role,
    netns_owner,
    nft_ruleset,
    plan_fleet,
)


def plan(**kw):
    args = {"clients": 3, "servers": 3, "slot": 0, "creator_pid": 4242} | kw
    return plan_fleet(kw.pop("name", "lab"), **{k: v for k, v in args.items() if k != "name"})


def all_addresses(p):
    return [ip for h in p.hosts for ip in h.ips] + [p.host_address.partition("/")[0]]


@pytest.mark.parametrize(("kw", "option"), [
    ({"clients": 0}, "--clients"),
    ({"clients": MAX_CLIENTS + 1}, "--clients"),
    ({"servers": 0}, "--servers"),
    ({"servers": 300}, "--servers"),
    ({"ips_per_client": 0}, "--ips"),
    ({"clients": 200, "ips_per_client": 4}, "--clients 200 x --ips 4"),
    ({"name": "a/b"}, "--name"),
    ({"name": ""}, "--name"),
    ({"name": "-x"}, "--name"),
    ({"name": "UPPER"}, "--name"),
    ({"name": "x" * 25}, "--name"),
    ({"slot": SLOTS}, "slot"),
    ({"port": 0}, "--port"),
])
def test_bad_input_is_refused_naming_the_option(kw, option):
    with pytest.raises(ValueError, match=option.replace("+", r"\+")):
        plan(**kw)


@pytest.mark.parametrize("slot", [0, 1, SLOTS - 1])
@pytest.mark.parametrize(("clients", "servers", "ips"), [(1, 1, 1), (3, 3, 2),
                                                          (MAX_CLIENTS, MAX_SERVERS, 3)])
def test_every_address_is_unique_and_inside_the_benchmarking_range(slot, clients, servers,
                                                                   ips):
    p = plan(slot=slot, clients=clients, servers=servers, ips_per_client=ips)
    addresses = all_addresses(p)
    assert len(addresses) == len(set(addresses))
    assert all(ipaddress.ip_address(a) in FLEET_NET for a in addresses)
    assert len(p.clients) == clients and len(p.servers) == servers
    assert all(len(c.ips) == ips for c in p.clients)


def test_two_slots_share_no_address_and_no_link_name():
    a, b = plan(slot=0), plan(slot=1, name="other")
    assert not set(all_addresses(a)) & set(all_addresses(b))
    assert not set(a.host_links) & set(b.host_links)
    assert ipaddress.ip_network(a.front_net).network_address != \
        ipaddress.ip_network(b.front_net).network_address


def test_clients_are_on_the_front_subnet_and_servers_on_the_back_one():
    p = plan()
    front, back = ipaddress.ip_network(p.front_net), ipaddress.ip_network(p.back_net)
    assert all(ipaddress.ip_address(ip) in front for c in p.clients for ip in c.ips)
    assert all(ipaddress.ip_address(s.ips[0]) in back for s in p.servers)
    assert ipaddress.ip_address(p.vip) not in front and ipaddress.ip_address(p.vip) not in back
    assert ipaddress.ip_address(p.host_address.partition("/")[0]) in front


def test_no_host_has_a_default_route_and_every_gateway_is_the_balancer():
    p = plan()
    lb_ips = set(p.balancer.ips)
    for host in p.hosts:
        for dest, via in host.routes:
            assert ipaddress.ip_network(dest).prefixlen > 0
            assert via in lb_ips
    assert p.balancer.routes == ()


def test_clients_route_only_the_vip_and_servers_only_the_client_subnet_via_the_balancer():
    p = plan()
    assert {c.routes for c in p.clients} == {((f"{p.vip}/32", p.balancer.ips[0]),)}
    assert {s.routes for s in p.servers} == {((p.front_net, p.balancer.ips[1]),)}


def test_link_names_fit_linux_fifteen_characters_at_the_largest_plan():
    p = plan(slot=SLOTS - 1, clients=MAX_CLIENTS, servers=MAX_SERVERS, ips_per_client=3)
    assert max(len(n) for n in p.host_links) <= 15
    assert max(len(inside) for h in p.hosts for _, _, inside in h.links) <= 15


@pytest.mark.parametrize(("netns", "owner"), [
    ("tcpmax-fleet-lab-4242-c0", ("lab", 4242)),
    ("tcpmax-fleet-my-lab-7-s12", ("my-lab", 7)),
    ("tcpmax-fleet-x-1-lb", ("x", 1)),
    ("tcpmax-prove-4242-0", None),
    ("tcpmax-fleet-lab-c0", None),
    ("tcpmax-fleet-lab-4242-q0", None),
])
def test_a_namespace_name_tells_its_fleet_and_creator(netns, owner):
    assert netns_owner(netns) == owner


def test_every_namespace_of_a_plan_names_its_fleet_and_creator():
    p = plan(name="my-lab", creator_pid=99)
    assert {netns_owner(h.netns) for h in p.hosts} == {("my-lab", 99)}
    assert {h.role for h in p.hosts} == set(Role)


@pytest.mark.parametrize("servers", [1, 2, 5])
def test_the_balancer_maps_each_new_connection_to_one_of_the_servers_in_turn(servers):
    p = plan(servers=servers, port=8080)
    rules = nft_ruleset(p)
    assert f"ip daddr {p.vip} tcp dport 8080 dnat to numgen inc mod {servers} map" in rules
    for i, s in enumerate(p.servers):
        assert f"{i} : {s.ips[0]}" in rules
    assert f"mod {servers} " in rules and f"{servers} : " not in rules
    assert "hook prerouting" in rules


def test_the_host_namespace_routes_the_whole_block_onto_the_bridge_and_the_vip_via_the_balancer():
    plan = plan_fleet("lab", clients=1, servers=1, slot=3, creator_pid=1)
    routes = dict(plan.host_routes)
    block = ipaddress.ip_network(plan.front_net).supernet(new_prefix=21)
    lb_front = next(a for dev, a in plan.balancer.addresses if dev == "front").split("/")[0]
    assert routes == {str(block): None, f"{plan.vip}/32": lb_front, plan.back_net: lb_front}
    assert ipaddress.ip_address(plan.vip) in block
    assert ipaddress.ip_network(plan.back_net).subnet_of(block)
