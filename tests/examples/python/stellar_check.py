"""Checks a contract-deployment transaction tenantd signed, with an XDR
implementation of its own: the Python stellar-sdk.

Usage: stellar_check.py ENVELOPE_BASE64 NETWORK_PASSPHRASE

Decodes the envelope (through the SDK's XDR layer and its transaction
model), re-encodes it, verifies each signature against the source account,
derives the address of the contract the transaction creates, decodes the
arguments its constructor gets, and verifies each address credential's
signature over its authorization preimage. Prints one JSON object; the
Rust test compares it with what the server recorded.
"""

import hashlib
import json
import sys

from stellar_sdk import Keypair, Network, StrKey, TransactionEnvelope, scval, xdr
from stellar_sdk.exceptions import BadSignatureError


def main() -> None:
    envelope_b64, passphrase = sys.argv[1], sys.argv[2]

    raw = xdr.TransactionEnvelope.from_xdr(envelope_b64)
    modelled = TransactionEnvelope.from_xdr(envelope_b64, passphrase)
    tx = modelled.transaction
    source = tx.source.account_id
    signer = Keypair.from_public_key(source)
    tx_hash = modelled.hash()

    signatures = []
    for decorated in modelled.signatures:
        try:
            signer.verify(tx_hash, decorated.signature)
            valid = True
        except BadSignatureError:
            valid = False
        signatures.append(
            {"valid": valid, "hint_matches": decorated.signature_hint == signer.signature_hint()}
        )

    invoke = raw.v1.tx.operations[0].body.invoke_host_function_op
    function = invoke.host_function
    contract = None
    salt = None
    constructor_args = []
    if function.type == xdr.HostFunctionType.HOST_FUNCTION_TYPE_CREATE_CONTRACT_V2:
        id_preimage = function.create_contract_v2.contract_id_preimage
        salt = id_preimage.from_address.salt.uint256.hex()
        preimage = xdr.HashIDPreimage(
            type=xdr.EnvelopeType.ENVELOPE_TYPE_CONTRACT_ID,
            contract_id=xdr.HashIDPreimageContractID(
                network_id=xdr.Hash(Network(passphrase).network_id()),
                contract_id_preimage=id_preimage,
            ),
        )
        contract = StrKey.encode_contract(hashlib.sha256(preimage.to_xdr_bytes()).digest())
        constructor_args = [native(arg) for arg in function.create_contract_v2.constructor_args]

    authorizations = []
    for entry in invoke.auth:
        credentials = entry.credentials
        if credentials.type != xdr.SorobanCredentialsType.SOROBAN_CREDENTIALS_ADDRESS:
            authorizations.append({"type": "source_account"})
            continue
        address = credentials.address
        preimage = xdr.HashIDPreimage(
            type=xdr.EnvelopeType.ENVELOPE_TYPE_SOROBAN_AUTHORIZATION,
            soroban_authorization=xdr.HashIDPreimageSorobanAuthorization(
                network_id=xdr.Hash(Network(passphrase).network_id()),
                nonce=address.nonce,
                signature_expiration_ledger=address.signature_expiration_ledger,
                invocation=entry.root_invocation,
            ),
        )
        payload = hashlib.sha256(preimage.to_xdr_bytes()).digest()
        account = native(xdr.SCVal(type=xdr.SCValType.SCV_ADDRESS, address=address.address))
        valid = []
        for signature in scval.to_native(address.signature):
            key = Keypair.from_raw_ed25519_public_key(signature["public_key"])
            try:
                key.verify(payload, signature["signature"])
                valid.append(key.public_key == account)
            except BadSignatureError:
                valid.append(False)
        authorizations.append({"type": "address", "address": account, "valid": valid})

    print(
        json.dumps(
            {
                "xdr_roundtrip": raw.to_xdr() == envelope_b64,
                "model_roundtrip": modelled.to_xdr() == envelope_b64,
                "source": source,
                "sequence": tx.sequence,
                "fee": tx.fee,
                "hash": tx_hash.hex(),
                "signatures": signatures,
                "contract": contract,
                "salt": salt,
                "constructor_args": constructor_args,
                "authorizations": authorizations,
            }
        )
    )


def native(value):
    """A constructor argument as JSON: strings as they are, addresses as
    strkeys."""
    decoded = scval.to_native(value)
    return getattr(decoded, "address", decoded)


if __name__ == "__main__":
    main()
