"""Consume from an nsqd as fast as it delivers, like NSQ's bench_reader.

    python bench/bench_reader.py --nsqd-tcp-address=127.0.0.1:4150 --channel=ch --rdy=2500
"""

from nsqbench import new_parser, report, run_reader

if __name__ == "__main__":
    parser = new_parser(__doc__)
    parser.add_argument("--channel", default="ch")
    parser.add_argument("--rdy", type=int, default=2500)
    parser.add_argument("--count", type=int, default=None, help="stop after this many")
    args = parser.parse_args()
    messages, seconds = run_reader(args.nsqd_tcp_address, args.topic, args.channel,
                                   args.rdy, args.runfor, args.count)
    report("reader", messages, seconds, args.size)
