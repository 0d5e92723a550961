"""Publish to an nsqd as fast as it acknowledges, like NSQ's bench_writer.

    python bench/bench_writer.py --nsqd-tcp-address=127.0.0.1:4150 --size=200 --batch-size=200
"""

from nsqbench import new_parser, report, run_writer

if __name__ == "__main__":
    parser = new_parser(__doc__)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--count", type=int, default=None, help="stop after this many")
    parser.add_argument("--window", type=int, default=8, help="unanswered batches in flight")
    parser.add_argument("--busy-poll", action="store_true",
                        help="poll the socket for replies instead of sleeping in recv()")
    args = parser.parse_args()
    messages, seconds = run_writer(args.nsqd_tcp_address, args.topic, args.size,
                                   args.batch_size, args.runfor, args.count, args.window,
                                   args.busy_poll)
    report("writer", messages, seconds, args.size)
